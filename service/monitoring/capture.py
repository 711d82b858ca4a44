"""Served texts captured for labelling: opt-in, sampled, private, bounded, rotated, safe for several processes.

The server samples a share (``capture_rate``) of the texts it classifies and hands them, with their
prediction and the model version that made it, to a ``CaptureWriter``: ``offer`` puts them on a bounded queue and
returns at once (it never blocks the request and never raises); a daemon thread appends them to ``capture.jsonl`` in
the capture folder. `continual capture export FILE` later turns the folder into a CSV to label and `continual ingest`.
Only requests that carry the admin bearer token are sampled unless ``capture_anonymous`` is set (service.api.admin):
anonymous traffic cannot fill the pool that labelling draws from.

On disk (``folder``, mode 0700; every file in it 0600, whatever the umask):

- ``capture.jsonl``: the current file, at most ``max_rows`` rows and ``max_bytes`` bytes, one JSON object a
  line. JSON is written with ``ensure_ascii=True``: every line is ASCII, so no text can break a line (U+2028,
  U+0085, NUL are escaped) and any Python str, a lone surrogate included, reads back exactly.
- ``capture.1.jsonl``: the previous current file. Before a row that would take the current file past either
  bound, it is renamed over this one (``os.replace``) and a new one starts: the folder never holds more than
  2 x ``max_rows`` rows nor 2 x ``max_bytes`` bytes of rows (plus the two small files below). A row longer than
  ``max_bytes`` on its own is dropped (``on_dropped("too_large")``).
- ``.capture.lock``: every gunicorn worker of a server writes to the same folder. A writer holds an
  exclusive ``flock`` on this file while it checks the count, appends and rotates; readers hold a shared one
  while they read both files, so they never see a rotation half done.
- ``.capture.count``: the current file's row count and its size in bytes when that count was taken, read
  and written under the lock. A size that does not match the file (a writer killed between its append and
  the count, a file removed or replaced by hand) makes the next writer count the rows again.

A batch is appended with one ``os.write`` on an O_APPEND descriptor, under the lock. A write that fails
(a full disk: ENOSPC; permissions) drops its records, reported through ``on_dropped("disk")``, one call per
record; a partial write is cut back off the file. A writer killed mid-write can still leave a torn last
line: the next writer cuts it off, and ``read_captures`` skips a malformed line meanwhile.
"""
from __future__ import annotations

import json
import logging
import numbers
import os
import queue
import tempfile
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from service.monitoring.capture_files import append_lines, private_folder

log = logging.getLogger(__name__)

BATCH_MAX = 500  # records taken off the queue for one write
DEFAULT_MAX_BYTES = 16 * 1024 * 1024  # per capture file (params.yaml: monitoring.capture.max_bytes)
_STOP = object()


def capture_record(text: str, prediction: str, confidence: float, model_version: str | None = None,
                   round_key: str | None = None, now: datetime | None = None,
                   model_name: str | None = None) -> dict[str, Any]:
    """One captured row, as `continual capture export` reads it: the text, the prediction, and which model answered
    (its V2 name, registry version and round)."""
    return {
        "time": (now or datetime.now(timezone.utc)).astimezone(timezone.utc).isoformat(timespec="milliseconds"),
        "text": text,
        "prediction": prediction,
        "confidence": float(confidence),
        "model_name": model_name,
        "model_version": model_version,
        "round_key": round_key,
    }


def check_capture_settings(rate: Any, max_rows: Any, folder: str | Path | None,
                           max_bytes: Any = DEFAULT_MAX_BYTES) -> None:
    """Raise ValueError, naming the setting, unless capture can run as configured. Creates ``folder`` (0700) if
    capture is on (``rate`` > 0) and it is missing, and makes an existing one 0700."""
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 <= float(rate) <= 1:
        raise ValueError(f"capture_rate must be a number between 0 and 1 (the share of served texts captured; "
                         f"0 = off), not {rate!r}")
    if isinstance(max_rows, bool) or not isinstance(max_rows, numbers.Integral) or max_rows < 1:
        raise ValueError(f"capture_max_rows must be an integer of at least 1 (rows kept in each of the two "
                         f"capture files), not {max_rows!r}")
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, numbers.Integral) or max_bytes < 1024:
        raise ValueError(f"capture_max_bytes must be an integer of at least 1024 (bytes kept in each of the two "
                         f"capture files), not {max_bytes!r}")
    if rate == 0:
        return
    if folder is None or str(folder).strip() == "":
        raise ValueError(f"capture_dir is required when capture_rate is above 0 (it is {rate!r}): the folder "
                         "the captured texts are written to")
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise ValueError(f"capture_dir {str(path)!r} exists and is not a folder")
    try:
        private_folder(path)
    except FileExistsError:
        raise ValueError(f"capture_dir {str(path)!r} exists and is not a folder") from None
    except OSError as e:
        verb = "made private (mode 0700)" if path.is_dir() else "created"
        raise ValueError(f"capture_dir {str(path)!r} cannot be {verb}: {e.strerror}") from None
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".capture-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"capture_dir {str(path)!r} is not writable: {e.strerror}") from None


class CaptureWriter:
    """Appends offered records to ``folder`` from a daemon thread; see the module's docstring.

    ``on_written(n)``: n records reached the disk. ``on_dropped(reason)``: one record did not; reason is
    "queue" (the queue was full: the writer fell behind), "disk" (the write failed), "invalid" (not JSON
    serialisable), "too_large" (one row longer than ``max_bytes``) or "closed" (offered after ``close``). Both
    are called from the writer's thread or from ``offer``'s caller, and must not block. After a fork the child
    starts its own thread on its first ``offer`` (records queued in the parent and not yet written stay the
    parent's)."""

    def __init__(self, folder: Path, max_rows: int, on_written: Callable[[int], None],
                 on_dropped: Callable[[str], None], queue_size: int = 1000,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
            raise ValueError(f"capture_max_rows must be an integer of at least 1, not {max_rows!r}")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"capture_max_bytes must be a positive integer, not {max_bytes!r}")
        self.folder = Path(folder)
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.on_written = on_written
        self.on_dropped = on_dropped
        self.queue_size = queue_size
        self._closed = False
        self._failing = False  # the last write failed: log the failure once, and the recovery
        self._start()

    def _start(self) -> None:
        self._pid = os.getpid()
        self._queue: queue.Queue = queue.Queue(maxsize=self.queue_size)
        self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # -- the request side ----------------------------------------------------------------------------

    def offer(self, records: list[dict]) -> None:
        """Queue ``records`` for writing; never blocks, never raises. Records that do not fit are dropped."""
        try:
            if self._closed:
                self._dropped("closed", len(records))
                return
            if self._pid != os.getpid():  # forked: the parent's thread does not run here
                self._start()
            for i, record in enumerate(records):
                try:
                    self._queue.put_nowait(record)
                except queue.Full:
                    self._dropped("queue", len(records) - i)
                    return
        except Exception:  # noqa: BLE001 - the request path must not fail because of capture
            log.exception("capture: offer failed")

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, then stop the thread (waits at most ``timeout`` seconds)."""
        if self._closed:
            return
        self._closed = True
        if self._pid != os.getpid() or not self._thread.is_alive():
            return
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.warning("capture: the writer did not drain its queue within %.1fs", timeout)
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("capture: the writer thread did not stop within %.1fs", timeout)

    # -- the writer thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < BATCH_MAX and batch[-1] is not _STOP:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = batch[-1] is _STOP
            records = [r for r in batch if r is not _STOP]
            try:
                self._write_records(records)
            except Exception:  # noqa: BLE001 - a bug here must not kill the thread
                log.exception("capture: writing %d records failed", len(records))
                self._dropped("disk", len(records))
            if stop:
                return

    def _write_records(self, records: list[dict]) -> None:
        lines: list[bytes] = []
        for record in records:
            try:
                line = (json.dumps(record, ensure_ascii=True, default=_jsonable) + "\n").encode("ascii")
            except (TypeError, ValueError) as e:
                log.warning("capture: dropped a record that is not JSON serialisable: %s", e)
                self._dropped("invalid", 1)
                continue
            if len(line) > self.max_bytes:
                self._dropped("too_large", 1)
                continue
            lines.append(line)
        if not lines:
            return
        written = 0
        try:
            written = append_lines(self.folder, self.max_rows, lines, self._written, self.max_bytes)
        except OSError as e:
            if not self._failing:
                log.warning("capture: cannot write to %s (%s); dropping captures until it works again",
                            self.folder, e.strerror or e)
            self._failing = True
            self._dropped("disk", len(lines) - getattr(e, "capture_written", 0))
            return
        if self._failing and written:
            log.warning("capture: writing to %s works again", self.folder)
            self._failing = False

    def _written(self, n: int) -> None:
        try:
            self.on_written(n)
        except Exception:  # noqa: BLE001
            log.exception("capture: on_written failed")

    def _dropped(self, reason: str, n: int) -> None:
        for _ in range(n):
            try:
                self.on_dropped(reason)
            except Exception:  # noqa: BLE001
                log.exception("capture: on_dropped failed")
                return


def _jsonable(value: Any) -> Any:
    """numpy scalars and the like: numbers as numbers, anything else as its str."""
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "item"):
        return value.item()
    return str(value)
