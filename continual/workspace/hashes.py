"""Content hashes as DVC 3 computes them, and which of them the workspace's DVC cache holds."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path


def dir_hash(folder: Path) -> str:
    """A folder's content hash as DVC 3 computes it: ``<md5>.dir``, the md5 of the JSON list of
    ``{"md5", "relpath"}`` sorted by relpath (dvc_data's ``Tree.as_bytes``); "" when the folder is missing."""
    if not folder.is_dir():
        return ""
    entries = sorted(({"md5": _file_md5(path), "relpath": path.relative_to(folder).as_posix()}
                      for path in folder.rglob("*") if path.is_file()), key=lambda entry: entry["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def dvc_cached(root: Path, hashes: list[str]) -> set[str]:
    """Those of ``hashes`` (md5s as .dvc files and dvc.lock record them; a folder's ends in ``.dir``) whose every
    file is in the DVC cache of the workspace at ``root``: data DVC stored there, which `dvc checkout` can put
    back without a remote. Imports dvc (~0.5 s): call it only when something is already out of place."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        repo = Repo(str(root))
    except DvcException:  # no DVC here (or a broken config): nothing is known to be stored
        return set()
    with repo:
        cache = repo.cache.local

        def held(oid: str) -> bool:
            path = Path(cache.oid_to_path(oid))
            if not path.is_file():
                return False
            if not oid.endswith(".dir"):
                return True
            try:
                entries = json.loads(path.read_text())
            except (OSError, ValueError):
                return False
            return all(Path(cache.oid_to_path(entry["md5"])).is_file() for entry in entries)

        return {oid for oid in hashes if oid and held(oid)}


def _file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

