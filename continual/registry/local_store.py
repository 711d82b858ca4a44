"""The workspace's own MLflow store, ``mlflow.db`` with its artifacts in ``mlartifacts/``, and how it follows
the workspace when the workspace moves.

MLflow keeps every artifact location of a local store as an absolute ``file://`` URI: it resolves a relative
one against the current folder when it writes it (``mlflow.utils.uri.resolve_uri_if_local``, 3.17) and reads
it back as written. Those are the experiment's ``artifact_location``, each run's ``artifact_uri``, each logged
model's ``artifact_location``, and each model version's ``storage_location`` (and ``source``, for a version
registered from a path). A workspace moved or copied elsewhere (``mv``, ``cp -r``) therefore brings a store
that names the folder it came from. The store records that folder itself: ``connect`` gives every experiment
it creates the location ``<root>/mlartifacts``. So each command that opens the store (``registry.connect``,
`continual serve` before gunicorn starts, `continual drift`) first calls ``follow_move``: when the experiments
name another root, that root is rewritten to this one in every location, in one transaction under the registry
lock, and one line says so. Only the workspace's own ``mlflow.db`` is ever rewritten: a tracking server, or a
database that ``tracking.uri`` names elsewhere, keeps the locations it chose.

``mlflow`` is not imported here: `continual serve` opens the store this way before any worker loads MLflow.
"""
from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

from continual.registry.lock import registry_lock
from continual.registry.tags import FOLDER_TAG
from continual.workspace.layout import MARKER, Workspace
from service.model_source import sqlite_database

DATABASE = "mlflow.db"
ARTIFACTS = "mlartifacts"
# Where MLflow 3.17 keeps artifact locations (mlflow/store/tracking/dbmodels/models.py and
# mlflow/store/model_registry/dbmodels/models.py): (table, column).
LOCATIONS = (("experiments", "artifact_location"), ("runs", "artifact_uri"), ("logged_models", "artifact_location"),
             ("model_versions", "storage_location"), ("model_versions", "source"))


def store_uri(ws: Workspace) -> str:
    """The SQLAlchemy URL of ``<workspace>/mlflow.db``, rendered by SQLAlchemy so that a '%', '?' or '#' in the
    path is quoted rather than read as URL syntax. The driver is named because MLflow creates the parent folder of
    a ``sqlite:///`` path as written, still quoted: a folder such as ``a%2525b`` would appear beside the workspace."""
    from sqlalchemy.engine import URL

    return URL.create("sqlite+pysqlite", database=str(ws.home / DATABASE)).render_as_string()


def artifact_location(ws: Workspace) -> str:
    """Where ``registry.connect`` has the experiments it creates in the local store keep their artifacts."""
    return (ws.home / ARTIFACTS).as_uri()


def is_store_of(ws: Workspace, uri: str) -> bool:
    """True when ``uri`` is a SQLite URL of the workspace's own ``mlflow.db``, however it is spelled."""
    database = sqlite_database(uri)
    return database is not None and database.resolve() == (ws.home / DATABASE).resolve()


def follow_move(ws: Workspace, uri: str) -> None:
    """When ``uri`` is the workspace's own store and that store was written at another root, point its artifact
    locations here (module docstring). A store that holds nothing yet, or that was written here, is left as it is."""
    database = ws.home / DATABASE
    if not (is_store_of(ws, uri) and (ws.home / MARKER).is_file() and database.is_file() and database.stat().st_size):
        return
    with closing(sqlite3.connect(database, timeout=60)) as db:
        if not _former_roots(db, ws):  # the common case: one read, no lock
            return
    with registry_lock(ws), closing(sqlite3.connect(database, timeout=60, isolation_level=None)) as db:
        db.execute("BEGIN IMMEDIATE")  # every writer waits: the roots are read again and rewritten as one change
        try:
            moved = {old: _rewrite(db, old, old_uri, ws.home) for old, old_uri in _former_roots(db, ws)}
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
    for old, count in moved.items():
        print(f"tracking: this workspace was at {old} when mlflow.db was written; {count} artifact locations in it "
              f"now point to {ws.home}", flush=True)


def _former_roots(db: sqlite3.Connection, ws: Workspace) -> list[tuple[Path, str]]:
    """The other roots the store's experiments were created at (each ``<root>/mlartifacts``), as a path and as
    the URI that the locations spell it with; not this root, nor another path to this same folder (a bind mount)."""
    if "experiments" not in _tables(db):  # created, MLflow's tables not yet
        return []
    here = artifact_location(ws)
    found = []
    for (location,) in db.execute("SELECT DISTINCT artifact_location FROM experiments WHERE artifact_location LIKE ?",
                                  (f"file:%/{ARTIFACTS}",)):
        if location == here:
            continue
        old = Path(url2pathname(urlsplit(location).path)).parent
        if not (old.exists() and os.path.samefile(old, ws.home)):
            found.append((old, location.removesuffix(f"/{ARTIFACTS}")))
    return found


def _rewrite(db: sqlite3.Connection, old: Path, old_uri: str, new: Path) -> int:
    """Every location under ``old`` (as the file URI ``old_uri`` or as a plain path) now under ``new``; how many
    were rewritten."""
    new_uri = new.as_uri()
    count = 0
    tables = _tables(db)
    for table, column in LOCATIONS:
        if table not in tables:
            continue
        for before, after in ((old_uri + "/", new_uri + "/"), (f"{old}/", f"{new}/")):
            count += db.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                                f"WHERE substr({column}, 1, ?) = ?", (after, len(before) + 1, len(before), before)
                                ).rowcount
    if "tags" in tables:
        count += db.execute("UPDATE tags SET value = ? WHERE key = ? AND value = ?",
                            (str(new), FOLDER_TAG, str(old))).rowcount
    return count


def _tables(db: sqlite3.Connection) -> set[str]:
    return {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
