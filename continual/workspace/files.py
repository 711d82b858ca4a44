"""Files written so that a crash never leaves half of one, and the paths a folder holds."""
from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_atomic(path: str | Path, data: bytes) -> None:
    """Readers see the old file or the new one, never half of it, even after a crash."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    # os.open with 0o666: the umask applies, as for a plain open() (mkstemp would leave the file 0600).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a crash
    finally:
        os.close(folder)


def paths_under(root: Path) -> set[Path]:
    """``root`` and every file and folder below it; empty when ``root`` does not exist."""
    return {root, *root.rglob("*")} if root.exists() else set()
