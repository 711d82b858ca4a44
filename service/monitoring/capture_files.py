"""The capture folder's files: appends under a lock, rotation, the row count, and reading them back.

See ``service.monitoring.capture`` for the layout; this module is every operation on those files. Captured texts are
user data: the folder is made 0700 and every file 0600, whatever the umask, and any looser mode found is tightened.
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
FOLDER_MODE = 0o700
FILE_MODE = 0o600


def private_folder(folder: Path) -> None:
    """``folder`` exists with mode 0700 (made so when missing or looser). OSError if it cannot be."""
    folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    if stat.S_IMODE(os.stat(folder).st_mode) != FOLDER_MODE:
        os.chmod(folder, FOLDER_MODE)


def _open_private(path: Path, flags: int) -> int:
    """``os.open`` creating with 0600; a file found with another mode (an older server, a copy) gets 0600."""
    fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


@contextmanager
def _locked(folder: Path, shared: bool = False) -> Iterator[None]:
    if shared:
        try:
            fd = os.open(folder / LOCK, os.O_RDONLY)
        except OSError:  # nothing was ever written, or a reader not allowed to open it: read unlocked
            yield
            return
    else:
        fd = _open_private(folder / LOCK, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def append_lines(folder: Path, max_rows: int, lines: list[bytes], on_written: Callable[[int], None],
                 max_bytes: int | None = None) -> int:
    """Append ``lines`` (each one whole row ending in "\\n", none longer than ``max_bytes``) under the folder's
    lock, rotating before a row that would take the current file past ``max_rows`` rows or ``max_bytes`` bytes:
    the folder never holds more than two files of those sizes. Returns the rows written. An OSError carries
    ``capture_written``: the rows written before it."""
    done = 0
    byte_cap = max_bytes if max_bytes is not None else float("inf")
    private_folder(folder)  # also when removed while the server runs (a clean-up): start it again
    with _locked(folder):
        count, size = _current_state(folder)
        while done < len(lines):
            if count >= max_rows or size + len(lines[done]) > byte_cap:
                if (folder / CURRENT).exists():
                    os.replace(folder / CURRENT, folder / PREVIOUS)
                count = size = 0
                _save_count(folder, 0, 0)
            end, grown = done, size
            while end < len(lines) and count + end - done < max_rows and grown + len(lines[end]) <= byte_cap:
                grown += len(lines[end])
                end += 1
            chunk = lines[done:max(end, done + 1)]  # a row alone over max_bytes: the caller's to drop, never loop
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
    fd = _open_private(path, os.O_WRONLY | os.O_APPEND)
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


def _current_state(folder: Path) -> tuple[int, int]:
    """(rows, bytes) of the current file: the sidecar's count if the file still has the size it recorded, else
    counted again (and a torn last line cut off)."""
    path = folder / CURRENT
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return 0, 0
    if not stat.S_ISREG(st.st_mode):  # a device or the like (a test's /dev/full): nothing to count
        return max(0, _load_count(folder)[0]), 0
    count, size = _load_count(folder)
    if size == st.st_size and count >= 0:
        return count, size
    count = _recount(path)
    size = os.stat(path).st_size
    _save_count(folder, count, size)
    return count, size


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
        fd = _open_private(folder / COUNT, os.O_WRONLY)
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
