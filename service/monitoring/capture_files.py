"""The capture folder's files: appends under a lock, rotation, the row count, and reading them back.

See ``service.monitoring.capture`` for the layout; this module is every operation on those files.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

CURRENT = "capture.jsonl"
PREVIOUS = "capture.1.jsonl"
LOCK = ".capture.lock"
COUNT = ".capture.count"


@contextmanager
def _locked(folder: Path, shared: bool = False) -> Iterator[None]:
    if shared:
        try:
            fd = os.open(folder / LOCK, os.O_RDONLY)
        except OSError:  # nothing was ever written, or a reader not allowed to open it: read unlocked
            yield
            return
    else:
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def append_lines(folder: Path, max_rows: int, lines: list[bytes], on_written: Callable[[int], None]) -> int:
    """Append ``lines`` (each one whole row ending in "\\n") under the folder's lock, rotating whenever the
    current file holds ``max_rows``. Returns the rows written. An OSError carries ``capture_written``: the
    rows written before it."""
    done = 0
    folder.mkdir(parents=True, exist_ok=True)  # removed while the server runs (a clean-up): start it again
    with _locked(folder):
        count = max(0, _current_count(folder))
        while done < len(lines):
            if count >= max_rows:
                os.replace(folder / CURRENT, folder / PREVIOUS)
                count = 0
                _save_count(folder, 0, 0)
            chunk = lines[done:done + max_rows - count]
            try:
                size = _append(folder / CURRENT, b"".join(chunk))
            except OSError as e:
                e.capture_written = done  # type: ignore[attr-defined]
                raise
            count += len(chunk)
            done += len(chunk)
            _save_count(folder, count, size)
            on_written(len(chunk))
    return done


def _append(path: Path, data: bytes) -> int:
    """One write of ``data`` at the end of ``path``; the file's size after it. A partial write is undone."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        st = os.fstat(fd)
        before = st.st_size
        try:
            n = os.write(fd, data)
        except OSError:
            _cut(fd, st, before)
            raise
        if n < len(data):
            _cut(fd, st, before)
            raise OSError(errno.ENOSPC, f"short write ({n} of {len(data)} bytes) to {path}")
        return before + n
    finally:
        os.close(fd)


def _cut(fd: int, st: os.stat_result, size: int) -> None:
    """Take a partial write back off a regular file (it would glue the next row onto a torn one)."""
    if not stat.S_ISREG(st.st_mode):
        return
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass


def _current_count(folder: Path) -> int:
    """The rows of the current file: the sidecar's count if the file still has the size it recorded, else
    counted again (and a torn last line cut off)."""
    path = folder / CURRENT
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return 0
    if not stat.S_ISREG(st.st_mode):  # a device or the like (a test's /dev/full): nothing to count
        return _load_count(folder)[0]
    count, size = _load_count(folder)
    if size == st.st_size and count >= 0:
        return count
    count = _recount(path)
    _save_count(folder, count, os.stat(path).st_size)
    return count


def _recount(path: Path) -> int:
    with open(path, "rb+") as f:
        count, size, last = 0, 0, b"\n"
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
            size += len(chunk)
            last = chunk[-1:]
        if last != b"\n":  # a writer was killed mid-write: cut its torn row off
            f.seek(0)
            data_end = _last_newline_end(f, size)
            f.truncate(data_end)
        return count


def _last_newline_end(f, size: int) -> int:
    """The offset just after the last "\\n" of the file (0 if none)."""
    end = size
    while end > 0:
        start = max(0, end - (1 << 16))
        f.seek(start)
        block = f.read(end - start)
        i = block.rfind(b"\n")
        if i >= 0:
            return start + i + 1
        end = start
    return 0


def _load_count(folder: Path) -> tuple[int, int]:
    try:
        count, size = (folder / COUNT).read_text().split()
        return int(count), int(size)
    except (OSError, ValueError):
        return -1, -1  # missing or torn: count again


def _save_count(folder: Path, count: int, size: int) -> None:
    try:
        fd = os.open(folder / COUNT, os.O_WRONLY | os.O_CREAT, 0o666)
        try:
            # Fixed width, written in place: no new block needed on a full disk, and never shorter than before.
            os.pwrite(fd, f"{count:20d} {size:20d}\n".encode(), 0)
        finally:
            os.close(fd)
    except OSError:
        pass  # a stale count is counted again by the next writer


# -- reading ---------------------------------------------------------------------------------------------


def read_capture_files(folder: Path) -> list[tuple[Path, list[dict]]]:
    """(file, its rows) for capture.1.jsonl then capture.jsonl, those that exist; blank or malformed lines
    (a torn last line) skipped. Both are read under one shared lock: never half a rotation."""
    folder = Path(folder)
    contents: list[tuple[Path, bytes]] = []
    with _locked(folder, shared=True):
        for name in (PREVIOUS, CURRENT):
            try:
                contents.append((folder / name, (folder / name).read_bytes()))
            except FileNotFoundError:
                pass
    return [(path, list(_parse(data))) for path, data in contents]


def read_captures(folder: Path) -> Iterator[dict]:
    """The rows of capture.1.jsonl then capture.jsonl, oldest first, skipping blank or malformed lines."""
    for _, rows in read_capture_files(folder):
        yield from rows


def _parse(data: bytes) -> Iterator[dict]:
    for raw in data.split(b"\n"):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except (ValueError, RecursionError):
            continue
        if isinstance(row, dict):
            yield row
