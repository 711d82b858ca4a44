"""A team tracking server for tests and benchmarks: a real PostgreSQL, then `mlflow server` on loopback.

    with postgres() as database, mlflow_server(database, folder) as server:
        os.environ["MLFLOW_TRACKING_URI"] = server.uri      # http://127.0.0.1:PORT

PostgreSQL's binaries come from the `pgserver` wheel (a test dependency, so a fresh CI machine needs no apt),
else from `pg_ctl` on PATH (Debian's `postgresql`). PostgreSQL refuses to run as root, so under root (CI
containers, this machine) the cluster runs as the `postgres` user if there is one, else as `nobody`. Its folder
is a fresh one under the system temp folder: pytest's own may be closed to that user (0700, root's), and a long
path would not fit PostgreSQL's socket name. Should that user not reach the binaries either (a virtual
environment under root's 0700 home), they are copied there too (about 30 MB). Both servers listen on 127.0.0.1 only, on free ports, and are stopped (and the cluster
deleted) even when the block fails.
"""
from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from helpers import BIN
from serving import free_port


def postgres_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: the pgserver wheel's, else the one of pg_ctl on PATH."""
    spec = importlib.util.find_spec("pgserver")  # found, not imported: importing it sets up its own server machinery
    if spec and spec.origin:
        bundled = Path(spec.origin).parent / "pginstall" / "bin"
        if (bundled / "pg_ctl").exists():
            return bundled
    found = shutil.which("pg_ctl")
    return Path(found).resolve().parent if found else None


def _run_as() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as when this process is root, else None (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
            return entry.pw_uid, entry.pw_gid
        except KeyError:
            continue
    raise RuntimeError("running as root with neither a `postgres` nor a `nobody` user: PostgreSQL cannot start")


def _readable_by_owner(pg_bin: Path, base: Path, as_owner: dict) -> Path:
    """``pg_bin``, or a copy of its installation in ``base`` when the cluster's user cannot reach it (a virtual
    environment under root's 0700 home, as on many CI machines). PostgreSQL finds lib/ and share/ beside bin/."""
    try:
        if subprocess.run([str(pg_bin / "pg_ctl"), "--version"], capture_output=True, **as_owner).returncode == 0:
            return pg_bin
    except OSError:  # exec refused: a folder on the way is closed to that user
        pass
    copy = base / "pg" / "pgserver" / "pginstall"
    for part in ("bin", "lib", "share"):
        if (pg_bin.parent / part).is_dir():
            shutil.copytree(pg_bin.parent / part, copy / part, symlinks=True)
    libs = pg_bin.parents[2] / "pgserver.libs"  # the wheel's binaries load libpq from $ORIGIN/../../../pgserver.libs
    if libs.is_dir():
        shutil.copytree(libs, base / "pg" / "pgserver.libs", symlinks=True)
    return copy / "bin"


@dataclass(frozen=True)
class Database:
    url: str  # SQLAlchemy: postgresql+psycopg://postgres@127.0.0.1:PORT/mlflow
    port: int
    data: Path


@contextmanager
def postgres(database: str = "mlflow") -> Iterator[Database]:
    """A fresh PostgreSQL cluster on 127.0.0.1 with one empty database; stopped and deleted afterwards."""
    import psycopg

    pg_bin = postgres_bin()
    if pg_bin is None:
        raise RuntimeError("no PostgreSQL: install the test extras (`pip install pgserver`) or Debian's postgresql")
    owner = _run_as()
    base = Path(tempfile.mkdtemp(prefix="continual-pg-"))
    as_owner = {"user": owner[0], "group": owner[1], "extra_groups": []} if owner else {}
    data, port = base / "data", free_port()

    def pg(tool: str, *args: str) -> None:
        done = subprocess.run([str(pg_bin / tool), *args], capture_output=True, text=True, cwd=base, **as_owner)
        if done.returncode:
            log = (base / "server.log").read_text()[-2000:] if (base / "server.log").exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stdout}{done.stderr}{log}")

    try:
        if owner:
            os.chown(base, *owner)
            pg_bin = _readable_by_owner(pg_bin, base, as_owner)
        pg("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync")
        options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={base} -c fsync=off"
        pg("pg_ctl", "-D", str(data), "-l", str(base / "server.log"), "-o", options, "-w", "-t", "60", "start")
        with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        yield Database(f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}", port, data)
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run([str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, cwd=base, **as_owner)
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class MlflowServer:
    """`mlflow server` on a PostgreSQL backend with its own artifact root; ``stop``/``start`` keep the port."""

    database: Database
    artifacts: Path
    log: Path
    port: int
    process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 120) -> None:
        command = [str(BIN / "mlflow"), "server", "--backend-store-uri", self.database.url,
                   "--artifacts-destination", self.artifacts.as_uri(), "--host", "127.0.0.1",
                   "--port", str(self.port), "--workers", "1"]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
               "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        env.pop("MLFLOW_TRACKING_URI", None)
        with self.log.open("a") as output:  # its own session: the server and its workers stop as one group
            self.process = subprocess.Popen(command, cwd=self.artifacts.parent, env=env, stdout=output,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready(timeout_s)

    def _wait_ready(self, timeout_s: float) -> None:
        import requests

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.process.returncode}:\n"
                                   f"{self.log.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.uri}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server not ready after {timeout_s} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        except ProcessLookupError:
            pass
        finally:
            try:  # a worker left behind in the group would hold the port
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@contextmanager
def mlflow_server(database: Database, folder: Path) -> Iterator[MlflowServer]:
    """`mlflow server --backend-store-uri postgresql+psycopg://... --artifacts-destination file://...` on a free
    loopback port, started and ready; stopped afterwards, also when the block fails."""
    artifacts = folder / "mlflow-artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    server = MlflowServer(database, artifacts, folder / "mlflow-server.log", free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()
