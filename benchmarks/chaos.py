"""The chaos suite of issue 10, "never stuck, nothing lost, nothing wrongly promoted".

    make chaos                                            # = python benchmarks/chaos.py, every section
    python benchmarks/chaos.py --only kill --kills 50     # one section
    python benchmarks/chaos.py --only soak --soak-seconds 600

Sections (docs/benchmarks.md, "Chaos", has the figures and what each one found):

- hostile      every fixture of tests/fixtures/hostile: a refusal names the file (and line) and leaves the
               workspace byte-identical (every file hashed, .git and .dvc included); an accepted file is
               followed by two successful replay+ewc rounds (in the kill stream when that section runs, else
               in a chain of its own); the 50 MB file's ingest, with its peak memory.
- kill         SIGKILL to the process group of `continual ingest` or `dvc repro`, at random moments aimed at
               each phase (ingest, training, the round folder's write, DVC's lock update, report, MLflow
               logging, registration, the alias move, the track stage); after each, `dvc repro` and
               `continual status` must recover, and an audit counts corrupt rounds, retrained rounds,
               duplicated/missing/RUNNING runs, versions never gated, a champion that does not load, leftovers.
- concurrent   `continual ingest` while `dvc repro` runs: both succeed, or the ingest waits.
- mlflow-down  MLFLOW_TRACKING_URI at a closed port during a round, then unset: fail fast, nothing retrained.
- soak         gunicorn on loopback under load, the alias moved every 30 s, one worker killed -9 half way:
               failed requests and RSS growth.
- fuzz         schemathesis on every endpoint of service/openapi.yaml, and the V2 tensors' shapes and
               datatypes by hand: no answer that is 5xx or not JSON.

Everything runs on 127.0.0.1 with the tiny random encoder (continual.model.make_tiny_model), one torch
thread. JSON per section and the table land in --out (default bench/chaos, git-ignored).
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HOSTILE = ROOT / "tests" / "fixtures" / "hostile"
SECTIONS = ("hostile", "kill", "concurrent", "mlflow-down", "soak", "fuzz")
MODEL_NAME = "continual-classifier"

ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1",
       "MLFLOW_DISABLE_TELEMETRY": "true", "CONTINUAL_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       "DVC_NO_ANALYTICS": "1", "PYTHONWARNINGS": "ignore"}
ENV.pop("MLFLOW_TRACKING_URI", None)
for _name in ("HF_HUB_OFFLINE", "MLFLOW_DISABLE_TELEMETRY", "TOKENIZERS_PARALLELISM"):
    os.environ[_name] = ENV[_name]
os.environ.pop("MLFLOW_TRACKING_URI", None)


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


def sh(cmd: list, cwd: Path, check: bool = True, env: dict | None = None, timeout: float | None = 900,
       ) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env or ENV, capture_output=True, text=True,
                          timeout=timeout)
    if check and done.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{done.stdout[-2000:]}\n"
                           f"{done.stderr[-2000:]}")
    return done


def load_make():
    spec = importlib.util.spec_from_file_location("hostile_make", HOSTILE / "make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def clean_csv(path: Path, salt: str, per_label: int = 8) -> Path:
    rows = ["text,label"] + [f"{word} {salt} number {i},{label}"
                             for label, word in (("neg", "awful dreadful"), ("pos", "lovely splendid"))
                             for i in range(per_label)]
    path.write_text("\n".join(rows) + "\n")
    return path


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root -> sha256 of its bytes ("dir", or "link:target"), .git and .dvc included."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = f"link:{os.readlink(path)}"
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def make_workspace(root: Path, tiny: Path, lenient_gate: bool = False) -> Path:
    import yaml

    sh([BIN / "continual", "init", root], root.parent)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["model"].update(base=str(tiny), max_length=32)
    params["train"].update(epochs=1, batch_size=16, eval_batch_size=64)
    params["strategy"]["name"] = "replay+ewc"
    params["strategy"]["replay"]["mem_size"] = 20
    if lenient_gate:  # every round is accepted, so every round moves the alias: the kill stream needs moves
        params["promotion"].update(max_avg_acc_drop=1.0, max_forgetting=1.0, min_new_acc=0.0)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))
    git = ["git", "-c", "user.name=chaos", "-c", "user.email=chaos@localhost", "-c", "commit.gpgsign=false"]
    sh([*git, "add", "-A"], root)
    sh([*git, "commit", "-qm", "workspace"], root)
    return root


def stream_keys(root: Path) -> list[str]:
    import yaml

    path = root / "stream.yaml"
    rounds = ((yaml.safe_load(path.read_text()) or {}).get("rounds") or {}) if path.exists() else {}
    return sorted(rounds, key=lambda k: rounds[k]["index"])


# == hostile arrivals ======================================================================================


def section_hostile(args, ctx: dict) -> dict:
    make = load_make()
    cases = make.load_manifest()
    work = ctx["work"] / "hostile"
    runtime = work / "runtime"
    work.mkdir(parents=True)
    ws = make_workspace(work / "refusals", ctx["tiny"])
    refused = [case for case in cases if case["expect"] == "refuse"]
    failures = []
    started = time.perf_counter()
    for case in refused:
        path = make.runtime_fixture(case, runtime) if case.get("runtime") else HOSTILE / case["file"]
        before = snapshot(ws)
        done = sh([BIN / "continual", "-C", ws, "ingest", path, f"--name={case['name']}"], ws, check=False)
        err = done.stderr
        problems = []
        if done.returncode != 2:
            problems.append(f"exit {done.returncode}")
        if str(path) not in err:
            problems.append("message does not name the file")
        if case["line"] is not None and f": line {case['line']}: " not in err:
            problems.append(f"message does not name line {case['line']}")
        if case["message"] not in err or "Traceback" in err:
            problems.append(f"unexpected message {err.strip()[:200]!r}")
        if snapshot(ws) != before:
            problems.append("the workspace changed")
        if problems:
            failures.append({"file": case["file"], "name": case["name"], "problems": problems})
    log(f"hostile: {len(refused) - len(failures)}/{len(refused)} refusals as expected "
        f"({time.perf_counter() - started:.0f} s)")

    big = next(case for case in cases if case["file"] == "big-50mb.csv")
    big_result = big_file(make, big, work, ctx["tiny"])
    result = {"refused": len(refused), "refusal_failures": failures, "big": big_result,
              "files": len({case["file"] for case in cases}), "cases": len(cases),
              "accepted": sum(case["expect"] == "accept" for case in cases)}
    if "kill" not in ctx["sections"]:  # otherwise the kill stream is made of the accepted fixtures
        result["chain"] = accepted_chain(make, cases, work, ctx["tiny"])
    return result


# Forked from a small parent: Linux carries the forking process's RSS high-water mark into the child's
# ru_maxrss across exec, so forking the command from this process (torch loaded) would report ~900 MB for
# anything. The wrapper is a fresh small python; what it forks starts from its few MB.
_PEAK_RSS = ("import os, subprocess, sys\n"
             "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
             "_, status, usage = os.wait4(p.pid, 0)\n"
             "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)\n")


def peak_rss_run(cmd: list, cwd: Path) -> tuple[int, float, int, str]:
    """(exit code, seconds, peak RSS in bytes of the process and the children it waited for, stderr)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PEAK_RSS, *map(str, cmd)], cwd=cwd, env=ENV, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - started
    code, maxrss = done.stdout.split()[-2:]
    return int(code), seconds, int(maxrss) * 1024, done.stderr


def big_file(make, case: dict, work: Path, tiny: Path) -> dict:
    ws = make_workspace(work / "big", tiny)
    path = make.runtime_fixture(case, work / "runtime")
    size = path.stat().st_size
    code, seconds, rss, err = peak_rss_run([BIN / "continual", "ingest", path, "--name", case["name"]], ws)
    result = {"bytes": size, "ingest_exit": code, "ingest_seconds": round(seconds, 1),
              "peak_rss_mb": round(rss / 2**20, 1), "error": err.strip()[-300:] if code else ""}
    log(f"hostile: 50 MB ingest exit {code} in {seconds:.1f} s, peak RSS {rss / 2**20:.0f} MB")
    if code == 0:
        for salt in ("after-big-1", "after-big-2"):
            sh([BIN / "continual", "ingest", clean_csv(work / f"{salt}.csv", salt), "--name", salt], ws)
        started = time.perf_counter()
        repro = sh([BIN / "dvc", "repro"], ws, check=False, timeout=3600)
        result["repro_exit"] = repro.returncode
        result["repro_seconds"] = round(time.perf_counter() - started, 1)
        result["rounds"] = sum((ws / "rounds" / key / "metrics.json").exists() for key in stream_keys(ws))
        log(f"hostile: 50 MB arrival + 2 clean: dvc repro exit {repro.returncode}, {result['rounds']} rounds "
            f"in {result['repro_seconds']} s")
    shutil.rmtree(ws / ".dvc" / "cache", ignore_errors=True)  # 100+ MB of copies
    return result


def accepted_chain(make, cases: list[dict], work: Path, tiny: Path) -> dict:
    """Every accepted fixture, then two clean arrivals, trained by one `dvc repro`."""
    ws = make_workspace(work / "chain", tiny)
    names = []
    for case in cases:
        if case["expect"] != "accept" or case["file"] == "big-50mb.csv":
            continue
        path = make.runtime_fixture(case, work / "runtime") if case.get("runtime") else HOSTILE / case["file"]
        sh([BIN / "continual", "ingest", path, f"--name={case['name']}"], ws)
        names.append(case["name"])
    for salt in ("clean-1", "clean-2"):
        sh([BIN / "continual", "ingest", clean_csv(work / f"{salt}.csv", salt), "--name", salt], ws)
    repro = sh([BIN / "dvc", "repro"], ws, check=False, timeout=7200)
    keys = stream_keys(ws)
    done = [key for key in keys if (ws / "rounds" / key / "metrics.json").exists()]
    followed = sum(1 for i, key in enumerate(keys[:-2]) if set(keys[i:i + 3]) <= set(done))
    log(f"hostile chain: dvc repro exit {repro.returncode}, {len(done)}/{len(keys)} rounds; "
        f"{followed}/{len(names)} accepted files followed by two successful rounds")
    return {"accepted": len(names), "followed_by_two_rounds": followed, "repro_exit": repro.returncode}


# == kill -9 ================================================================================================


class Watched:
    """A command in its own process group (same session: it stays under this run's nice), its output kept."""

    def __init__(self, cmd: list, cwd: Path):
        self.started = time.monotonic()
        self.proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, process_group=0)
        self.output = bytearray()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        fd = self.proc.stdout.fileno()
        while chunk := os.read(fd, 65536):
            self.output += chunk

    def text(self) -> str:
        return self.output.decode(errors="replace")

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def commands(self) -> list[str]:
        import psutil

        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return []
        found = []
        for child in children:
            with contextlib.suppress(psutil.Error):
                found.append(" ".join(child.cmdline()))
        return found

    def kill(self) -> None:
        import psutil

        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.reader.join(timeout=10)
        deadline = time.monotonic() + 30  # the whole group, grandchildren included, must be gone
        while time.monotonic() < deadline:
            alive = []
            for process in psutil.process_iter(["pid"]):
                with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
                    if os.getpgid(process.pid) == self.proc.pid and process.status() != psutil.STATUS_ZOMBIE:
                        alive.append(process.pid)
            if not alive:
                return
            time.sleep(0.05)

    def finish(self, timeout: float = 3600) -> int:
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return code


class Registry:
    """Read-only polls of the workspace's mlflow.db (what the track stage has done so far)."""

    def __init__(self, db: Path):
        self.db = db

    def _query(self, sql: str) -> list:
        if not self.db.exists():
            return []
        try:
            with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=0.2)) as con:
                return con.execute(sql).fetchall()
        except sqlite3.Error:
            return []

    def running(self) -> int:
        rows = self._query("select count(*) from runs where status = 'RUNNING'")
        return rows[0][0] if rows else 0

    def versions(self) -> int:
        rows = self._query("select count(*) from model_versions")
        return rows[0][0] if rows else 0

    def alias(self) -> str:
        rows = self._query(f"select version from registered_model_aliases where alias = 'champion' "
                           f"and name = '{MODEL_NAME}'")
        return str(rows[0][0]) if rows else ""


@dataclass
class Target:
    name: str
    command: str  # "ingest" | "repro"
    fires: Callable[["Watched", dict], bool]
    delay: Callable[[random.Random], float]
    what: str


def _child(w: Watched, text: str) -> bool:
    return any(text in command for command in w.commands())


TARGETS = [
    Target("ingest", "ingest", lambda w, s: w.elapsed() >= s["at"], lambda r: 0.0,
           "continual ingest, at a random moment"),
    Target("ingest-dvc-add", "ingest", lambda w, s: _child(w, "dvc --wait-for-lock add") or _child(w, "dvc add"),
           lambda r: r.uniform(0, 0.6), "continual ingest, during its `dvc add`"),
    Target("ingest-register", "ingest", lambda w, s: (s["ws"] / "data" / "arrivals" / f"{s['key']}.dvc").exists(),
           lambda r: r.uniform(0, 0.08), "continual ingest, once the .dvc file exists (stream.yaml, git add)"),
    Target("round-start", "repro", lambda w, s: _child(w, "continual round"), lambda r: r.uniform(0, 6),
           "the round stage (imports, model load, training)"),
    # A tiny arrival trains in well under a second and its round folder is written in milliseconds: these two
    # fire at once, and the watch loop polls every 2 ms.
    Target("training", "repro", lambda w, s: "epoch 1" in w.text(), lambda r: r.uniform(0, 0.05),
           "the round stage, in the training loop"),
    Target("round-write", "repro", lambda w, s: bool(glob.glob(str(s["ws"] / "rounds" / f".{s['key']}.tmp-*"))),
           lambda r: 0.0, "the round stage, writing rounds/.KEY.tmp-* (before its rename)"),
    Target("round-done", "repro", lambda w, s: (s["ws"] / "rounds" / s["key"] / "metrics.json").exists(),
           lambda r: r.uniform(0, 0.6), "just after the round folder is complete (DVC hashing, caching, lock)"),
    Target("lock-update", "repro", lambda w, s: w.text().count("Updating lock file") > s["locks_before_round"],
           lambda r: 0.0, "DVC's 'Updating lock file' after the round"),
    Target("report", "repro", lambda w, s: _child(w, "continual report"), lambda r: r.uniform(0, 2.5),
           "the report stage"),
    Target("track", "repro", lambda w, s: _child(w, "continual track"), lambda r: r.uniform(0, 5),
           "the track stage, at a random moment"),
    Target("mlflow-logging", "repro", lambda w, s: _child(w, "continual track") and s["registry"].running() > 0,
           lambda r: r.uniform(0, 0.5), "the track stage, while a run is RUNNING"),
    Target("registration", "repro", lambda w, s: s["registry"].versions() > s["versions_before"],
           lambda r: r.uniform(0, 0.3), "the track stage, right after the model version is created"),
    Target("alias-move", "repro", lambda w, s: s["registry"].alias() not in ("", s["alias_before"]),
           lambda r: 0.0, "the gate, right after the alias moved"),
    Target("repro", "repro", lambda w, s: w.elapsed() >= s["at"], lambda r: 0.0,
           "dvc repro, at a random moment"),
]


class Stream:
    """The kill stream's arrivals: the accepted hostile fixtures, then clean ones without end."""

    def __init__(self, make, work: Path):
        self.make = make
        self.work = work
        self.cases = [case for case in make.load_manifest()
                      if case["expect"] == "accept" and case["file"] != "big-50mb.csv"]
        self.position = 0
        self.clean = 0
        self.retry: list[tuple[Path, str, dict | None]] = []

    def again(self, arrival: tuple[Path, str, dict | None]) -> None:
        """An arrival whose ingest was killed and rolled back comes first next time: the user ingests it again."""
        self.retry.append(arrival)

    def next(self) -> tuple[Path, str, dict | None]:
        if self.retry:
            return self.retry.pop()
        if self.position < len(self.cases):
            case = self.cases[self.position]
            self.position += 1
            path = (self.make.runtime_fixture(case, self.work / "runtime") if case.get("runtime")
                    else HOSTILE / case["file"])
            return path, case["name"], case
        self.clean += 1
        name = f"clean-{self.clean}"
        return clean_csv(self.work / f"{name}.csv", name), name, None


def complete_rounds(ws: Path) -> dict[str, tuple[str, int]]:
    out = {}
    for key in stream_keys(ws):
        metrics = ws / "rounds" / key / "metrics.json"
        with contextlib.suppress(OSError):
            out[key] = (hashlib.sha256(metrics.read_bytes()).hexdigest(), metrics.stat().st_mtime_ns)
    return out


class Auditor:
    """After a recovery: what must hold in the workspace and its registry."""

    def __init__(self, ws: Path):
        from mlflow import MlflowClient

        self.ws = ws
        self.client = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")

    def audit(self, before: dict[str, tuple[str, int]]) -> dict:
        import yaml

        from continual.tracking import RoundFolder
        from continual.workspace import Workspace

        ws = self.ws
        found: dict[str, Any] = {"problems": []}
        problems = found["problems"]
        keys = stream_keys(ws)
        # rounds: whole, not retrained
        corrupt = []
        for key in keys:
            folder = ws / "rounds" / key
            needed = ["metrics.json", "round.json", "train_log.csv", "buffer.jsonl", "ewc.safetensors",
                      "model/classifier.json", "model/head.safetensors", "model/config.json"]
            missing = [name for name in needed if not (folder / name).is_file()]
            try:
                json.loads((folder / "metrics.json").read_text())
                json.loads((folder / "round.json").read_text())
                json.loads((ws / "metrics" / f"{key}.json").read_text())
            except (OSError, ValueError) as error:
                missing.append(f"unreadable ({error.__class__.__name__})")
            if missing:
                corrupt.append(f"{key}: {', '.join(missing)}")
        found["corrupt_rounds"] = len(corrupt)
        problems += [f"corrupt round {c}" for c in corrupt]
        now = complete_rounds(ws)
        retrained = [key for key, (digest, _) in before.items() if key in now and now[key][0] != digest]
        found["retrained"] = len(retrained)
        found["restored_from_cache"] = sum(1 for key, (digest, mtime) in before.items()
                                           if key in now and now[key] == (digest, now[key][1]) and now[key][1] != mtime)
        problems += [f"complete round retrained: {key}" for key in retrained]
        # leftovers
        leftovers = [p for p in glob.glob(str(ws / "rounds" / ".*.tmp-*"))]
        leftovers += [p for p in glob.glob(str(ws / ".*.tmp")) + glob.glob(str(ws / "data" / "arrivals" / ".*.tmp"))]
        leftovers += [str(ws / ".git" / "index.lock")] if (ws / ".git" / "index.lock").exists() else []
        journal = ws / ".continual" / "ingest-journal.json"
        found["journal_waiting"] = 0
        if journal.exists():  # `continual verify` leaves it only when its .dvc file exists unregistered
            half = json.loads(journal.read_text())["key"]
            if (ws / "data" / "arrivals" / f"{half}.dvc").exists() and half not in keys:
                found["journal_waiting"] = 1  # for the next ingest (or `continual repair`); blocks nothing
            else:
                leftovers.append(str(journal))
        found["leftovers"] = len(leftovers)
        problems += [f"leftover {Path(p).relative_to(ws)}" for p in leftovers]
        lock = ws / "dvc.lock"
        try:
            stages = (yaml.safe_load(lock.read_text()) or {}).get("stages") or {}
            missing = [key for key in keys if f"round@{key}" not in stages]
        except (OSError, yaml.YAMLError) as error:
            missing = [f"dvc.lock unreadable: {error}"]
        if missing:
            problems.append(f"dvc.lock lacks {missing}")
        rwlock = ws / ".dvc" / "tmp" / "rwlock"
        found["stale_rwlock_entries"] = 0
        if rwlock.exists():
            try:
                held = json.loads(rwlock.read_text())
                for mode in ("read", "write"):
                    for infos in (held.get(mode) or {}).values():
                        for info in infos if isinstance(infos, list) else [infos]:
                            if _alive(info.get("pid", 0)):
                                problems.append(f".dvc/tmp/rwlock: a live process holds {info}")
                            else:  # DVC drops a dead process's entry itself when a command needs the path
                                found["stale_rwlock_entries"] += 1
            except (ValueError, AttributeError):
                problems.append(".dvc/tmp/rwlock is corrupt")
        # MLflow: one run per round content, none RUNNING, every version gated
        experiment = self.client.get_experiment_by_name("continual")
        runs = self.client.search_runs([experiment.experiment_id], "", max_results=50000) if experiment else []
        hashes: dict[str, int] = {}
        for run in runs:
            if run.data.tags.get("continual.kind") == "round" and "continual.round_hash" in run.data.tags:
                tag = run.data.tags["continual.round_hash"]
                hashes[tag] = hashes.get(tag, 0) + 1
        workspace = Workspace.at(ws)
        current = {key: RoundFolder.read(workspace, key).round_hash for key in keys
                   if (ws / "rounds" / key / "metrics.json").exists()}
        found["missing_runs"] = sum(1 for h in current.values() if hashes.get(h, 0) == 0)
        found["duplicated_runs"] = sum(n - 1 for n in hashes.values() if n > 1)
        found["running_runs"] = sum(1 for run in runs if run.info.status == "RUNNING")
        problems += [f"round {key} has no MLflow run" for key, h in current.items() if hashes.get(h, 0) == 0]
        if found["duplicated_runs"]:
            problems.append(f"{found['duplicated_runs']} duplicated round runs")
        if found["running_runs"]:
            problems.append(f"{found['running_runs']} runs left RUNNING")
        versions = self.client.search_model_versions(f"name = '{MODEL_NAME}'", max_results=10000)
        ungated = [str(v.version) for v in versions if "promotion.decision" not in v.tags]
        found["ungated_versions"] = len(ungated)
        found["versions"] = len(versions)
        if ungated:
            problems.append(f"versions never gated: {', '.join(sorted(ungated, key=int))}")
        # the champion: a gated, accepted version of the newest round, and it loads
        found["champion_loads"] = False
        try:
            champion = self.client.get_model_version_by_alias(MODEL_NAME, "champion")
            found["champion"] = str(champion.version)
            if champion.tags.get("promotion.decision") != "accepted":
                problems.append(f"champion v{champion.version} was not accepted by the gate "
                                f"({champion.tags.get('promotion.decision')})")
            if keys and champion.tags.get("round_hash") != current.get(keys[-1]):
                problems.append(f"champion v{champion.version} is not the newest round {keys[-1]} "
                                f"(it is {champion.tags.get('round_key')})")
            from continual.promotion import _history

            history = _history(self.client, MODEL_NAME)
            if history[-1:] != [str(champion.version)]:
                problems.append(f"champion v{champion.version} is not the last move of the recorded history "
                                f"{history[-3:]} (rollback would skip it)")
            self._load(champion)
            found["champion_loads"] = True
        except Exception as error:  # noqa: BLE001 - every failure to load is the finding
            problems.append(f"champion does not load: {type(error).__name__}: {str(error)[:200]}")
        return found

    def _load(self, champion) -> None:
        from service import backends
        from service.model_source import hf_folders, source_for

        source = source_for(f"models:/{MODEL_NAME}@champion", f"sqlite:///{self.ws / 'mlflow.db'}")
        card = source.resolve()
        if card.version != str(champion.version):
            raise RuntimeError(f"the service resolved v{card.version}, the registry says v{champion.version}")
        with tempfile.TemporaryDirectory() as tmp:
            model_dir, tokenizer_dir = hf_folders(source.fetch(card, Path(tmp)))
            choice = backends.choose("auto", model_dir, card, 0.01)  # what `continual serve` would load
            loaded = backends.load(choice, model_dir, tokenizer_dir, card, 32, threads=1)
            (prediction,) = loaded.predict(["a text after a crash"], batch_size=1)
            if prediction.label not in loaded.labels:
                raise RuntimeError(f"predicted {prediction.label!r}, not one of the labels")


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(int(pid)).status() != psutil.STATUS_ZOMBIE  # killed, unreaped: not alive
    except (psutil.NoSuchProcess, ValueError):
        return False
    except psutil.Error:
        return True


def repro_once_more_if_terminated(ws: Path, record: dict) -> subprocess.CompletedProcess:
    """`dvc repro`; again if a signal from outside this run ended it (other jobs share this machine: on
    2026-11-30 two recoveries ended with SIGTERM that nothing here sent). Counted in the record."""
    repro = sh([BIN / "dvc", "repro"], ws, check=False, timeout=3600)
    if repro.returncode < 0:
        record.setdefault("terminated_from_outside", []).append(repro.returncode)
        repro = sh([BIN / "dvc", "repro"], ws, check=False, timeout=3600)
    return repro


def recover(ws: Path, record: dict) -> bool:
    """What a user does after a crash: `dvc repro`; if that fails, `continual status` says what to run."""
    repro = repro_once_more_if_terminated(ws, record)
    record["recovery_repro_exit"] = repro.returncode
    record["recovery_rounds"] = re.findall(r"Running stage 'round@([^']+)'", repro.stdout)
    record["restored_rounds"] = re.findall(r"round (\S+): restored", repro.stdout)
    if repro.returncode:
        record["recovery_error"] = (repro.stderr.strip() or repro.stdout.strip())[-400:]
        status = sh([BIN / "continual", "status"], ws, check=False)
        hint = re.search(r"repair: run `([^`]+)`", status.stdout + status.stderr)
        record["status_hint"] = hint.group(1) if hint else ""
        if not hint:
            return False
        fix = sh(hint.group(1).split(), ws, check=False)
        record["repair"] = (fix.stdout + fix.stderr).strip()[-400:]
        repro = repro_once_more_if_terminated(ws, record)
        record["repro_after_repair_exit"] = repro.returncode
        if repro.returncode:
            record["recovery_error"] = (repro.stderr.strip() or repro.stdout.strip())[-400:]
            return False
    status = sh([BIN / "continual", "status"], ws, check=False)
    record["status_exit"] = status.returncode
    if status.returncode or "not trained yet" in status.stdout:
        record["recovery_error"] = (status.stdout + status.stderr)[-400:]
        return False
    return True


def section_kill(args, ctx: dict) -> dict:
    make = load_make()
    work = ctx["work"] / "kill"
    work.mkdir(parents=True)
    ws = make_workspace(work / "ws", ctx["tiny"], lenient_gate=True)
    rng = random.Random(args.seed)
    stream = Stream(make, work)
    registry = Registry(ws / "mlflow.db")

    # Two rounds first, untouched: a history to lose, a champion to keep, and the time a repro and an ingest
    # take. One round per `dvc repro`, as in the campaign: the gate judges the newest round of each repro only.
    for _ in range(2):
        path, name, _ = stream.next()
        started = time.perf_counter()
        sh([BIN / "continual", "ingest", path, f"--name={name}"], ws)
        ingest_seconds = time.perf_counter() - started
        started = time.perf_counter()
        sh([BIN / "dvc", "repro"], ws, timeout=3600)
        repro_seconds = time.perf_counter() - started
    auditor = Auditor(ws)
    log(f"kill: a round's repro takes ~{repro_seconds:.0f} s, an ingest {ingest_seconds:.1f} s")

    records: list[dict] = []
    kills = 0
    order: list[Target] = []
    campaign_started = time.perf_counter()
    chosen = [t for t in TARGETS if not args.targets or t.name in args.targets.split(",")]
    stuck_in_a_row = 0
    while kills < args.kills:
        if not order:
            order = chosen[:]
            rng.shuffle(order)
        target = order.pop()
        record: dict[str, Any] = {"target": target.name}
        before = complete_rounds(ws)
        arrival = stream.next()
        path, name, case = arrival
        key = f"{len(stream_keys(ws)) + 1:04d}-{name}"
        state = {"ws": ws, "key": key, "registry": registry, "at": 0.0, "locks_before_round": 0,
                 "versions_before": registry.versions(), "alias_before": registry.alias()}
        if target.command == "ingest":
            state["at"] = rng.uniform(0.05, ingest_seconds * 1.1)
            watched = Watched([BIN / "continual", "ingest", path, f"--name={name}"], ws)
        else:
            ingested = sh([BIN / "continual", "ingest", path, f"--name={name}"], ws, check=False)
            if ingested.returncode:  # the next command after a killed ingest must not be blocked by it
                record["ingest_error"] = ingested.stderr.strip()[-400:]
                record["killed"], record["recovered"] = False, False
                record["audit"] = {"problems": [f"ingest blocked: {record['ingest_error']}"]}
                records.append(record)
                log(f"kill -- {target.name}: the ingest before it failed: {record['ingest_error']}")
                break
            state["at"] = rng.uniform(0.5, repro_seconds)
            watched = Watched([BIN / "dvc", "repro"], ws)
        fired_at = None
        delay = 0.0
        while watched.proc.poll() is None:
            if fired_at is None:
                if target.name == "lock-update" and "> continual round" not in watched.text():
                    state["locks_before_round"] = watched.text().count("Updating lock file")
                if target.fires(watched, state):
                    fired_at = time.monotonic()
                    delay = target.delay(rng)
            if fired_at is not None and time.monotonic() - fired_at >= delay:
                record["commands_at_kill"] = [c for c in watched.commands() if "continual" in c or "dvc" in c
                                              or c.startswith("git")]
                record["tmp_round_at_kill"] = bool(glob.glob(str(ws / "rounds" / f".{key}.tmp-*")))
                record["round_done_at_kill"] = (ws / "rounds" / key / "metrics.json").exists()
                record["running_runs_at_kill"] = registry.running()
                watched.kill()
                record["killed_after_s"] = round(watched.elapsed(), 2)
                break
            time.sleep(0.002 if target.name in ("training", "round-write") else 0.01)
        else:
            watched.finish()
        record["killed"] = fired_at is not None and watched.proc.returncode == -signal.SIGKILL
        record["output_tail"] = watched.text()[-300:]
        kills += record["killed"]
        record["recovered"] = recover(ws, record)
        if target.command == "ingest":
            record["arrival_registered"] = key in stream_keys(ws)
            if not record["arrival_registered"]:  # rolled back (or never begun): the next iteration ingests it
                stream.again(arrival)
        record["hostile_fixture"] = case["file"] if case else ""
        audit = auditor.audit(before) if record["recovered"] else {"problems": ["not recovered"]}
        record["audit"] = audit
        records.append(record)
        problems = audit["problems"]
        log(f"kill {kills:>2}/{args.kills} {target.name:<16} "
            f"{'killed' if record['killed'] else 'finished first'} after {record.get('killed_after_s', '-')} s "
            f"{record.get('commands_at_kill', [''])[-1:] if record['killed'] else ''}; "
            f"recovered={record['recovered']}{' (repair: ' + record['status_hint'] + ')' if record.get('status_hint') else ''}"
            f"{'; PROBLEMS: ' + '; '.join(problems) if problems else ''}")
        if not record["recovered"] and record.get("recovery_error"):
            log(f"  recovery error: {record['recovery_error'][-300:]}")
        stuck_in_a_row = 0 if record["recovered"] else stuck_in_a_row + 1
        if stuck_in_a_row >= 3 and not args.keep_going:
            log("kill: three recoveries in a row failed; the workspace is stuck, stopping the campaign")
            break
    minutes = (time.perf_counter() - campaign_started) / 60
    # The rest of the hostile fixtures, then two clean arrivals, one round per repro: every accepted fixture is
    # followed by two successful rounds even when the kills ran out first.
    drained = 0
    hostile_names = {"-" + case["name"] for case in stream.cases}
    while True:
        keys = stream_keys(ws)
        last = max((i for i, key in enumerate(keys) if any(key.endswith(n) for n in hostile_names)), default=-1)
        if stream.position >= len(stream.cases) and not stream.retry and len(keys) - 1 - last >= 2:
            break
        path, name, _ = stream.next()
        sh([BIN / "continual", "ingest", path, f"--name={name}"], ws)
        sh([BIN / "dvc", "repro"], ws, timeout=3600)
        drained += 1
    final_audit = auditor.audit(complete_rounds(ws))
    keys = stream_keys(ws)
    done = {key for key in keys if (ws / "rounds" / key / "metrics.json").exists()}
    hostile_keys = [key for key in keys if any(key.endswith("-" + c["name"]) for c in stream.cases)]
    followed = sum(1 for key in hostile_keys if keys.index(key) + 2 < len(keys)
                   and {key, *keys[keys.index(key) + 1:keys.index(key) + 3]} <= done)
    log(f"kill: {drained} more arrivals to follow the last hostile ones; final audit problems: {final_audit['problems']}")
    return {"kills": kills, "attempts": len(records), "minutes": round(minutes, 1), "records": records,
            "drained": drained, "final_audit": final_audit,
            "rounds": len(done), "hostile_accepted_in_stream": len(hostile_keys),
            "hostile_followed_by_two_rounds": followed, "hostile_cases": len(stream.cases)}


# == an ingest during dvc repro ==============================================================================


def section_concurrent(args, ctx: dict) -> dict:
    """For each moment (DVC holding its repo lock, the round stage, the report stage, the track stage): start
    `dvc repro` on a new arrival, start `continual ingest` of the next one at that moment; both must exit 0,
    the repro's round must be gated, and the next `dvc repro` trains the ingested arrival."""
    work = ctx["work"] / "concurrent"
    work.mkdir(parents=True)
    ws = make_workspace(work / "ws", ctx["tiny"], lenient_gate=True)
    first = clean_csv(work / "first.csv", "first")
    sh([BIN / "continual", "ingest", first, "--name", "first"], ws)
    sh([BIN / "dvc", "repro"], ws, timeout=3600)
    moments = {"dvc-lock": lambda w: _dvc_lock_held(ws), "round": lambda w: _child(w, "continual round"),
               "report": lambda w: _child(w, "continual report"), "track": lambda w: _child(w, "continual track")}
    trials = []
    for n, (moment, ready) in enumerate(moments.items()):
        trained = f"during-{moment}"
        sh([BIN / "continual", "ingest", clean_csv(work / f"{trained}.csv", trained), "--name", trained], ws)
        repro = Watched([BIN / "dvc", "repro"], ws)
        while repro.proc.poll() is None and not ready(repro):
            time.sleep(0.02)
        concurrent = f"ingested-{moment}"
        overlapped = repro.proc.poll() is None
        began = time.perf_counter()
        ingest = sh([BIN / "continual", "ingest", clean_csv(work / f"{concurrent}.csv", concurrent), "--name",
                     concurrent], ws, check=False)
        ingest_seconds = time.perf_counter() - began
        repro_code = repro.finish()
        text = repro.text()
        trial = {"moment": moment, "ingest_started_while_repro_ran": overlapped,
                 "ingest_exit": ingest.returncode, "ingest_seconds": round(ingest_seconds, 1),
                 "ingest_error": ingest.stderr.strip()[-300:] if ingest.returncode else "",
                 "repro_exit": repro_code, "repro_tail": text[-400:] if repro_code else "",
                 "track_ran": "Running stage 'track'" in text}
        from mlflow import MlflowClient

        client = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
        key = next(k for k in stream_keys(ws) if k.endswith(trained))
        runs = client.search_runs([client.get_experiment_by_name("continual").experiment_id],
                                  f"tags.`continual.round_key` = '{key}'")
        versions = [v for run in runs for v in client.search_model_versions(f"run_id = '{run.info.run_id}'")]
        trial["trained_round_gated"] = any("promotion.decision" in v.tags for v in versions)
        after = sh([BIN / "dvc", "repro"], ws, check=False, timeout=3600)
        trial["next_repro_exit"] = after.returncode
        trial["next_repro_trained"] = re.findall(r"Running stage 'round@([^']+)'", after.stdout)
        trial["ok"] = (overlapped and ingest.returncode == 0 and repro_code == 0 and trial["trained_round_gated"]
                       and after.returncode == 0 and any(k.endswith(concurrent) for k in trial["next_repro_trained"]))
        log(f"concurrent: ingest during {moment}: ingest exit {ingest.returncode} in {ingest_seconds:.1f} s, "
            f"repro exit {repro_code}, trained round gated {trial['trained_round_gated']}, next repro trains "
            f"{trial['next_repro_trained']}")
        trials.append(trial)
    return {"trials": trials}


def _dvc_lock_held(ws: Path) -> bool:
    """True while a dvc process holds the repo lock (.dvc/tmp/lock, an flock through zc.lockfile)."""
    import fcntl

    try:
        fd = os.open(ws / ".dvc" / "tmp" / "lock", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's own lock at once
    return False


def summarise_concurrent(result: dict) -> list[tuple[str, str, str]]:
    trials = result["trials"]
    return [("concurrent", "ingest during dvc repro: both exit 0, round gated, next repro trains it",
             f"{sum(t['ok'] for t in trials)}/{len(trials)} (" + ", ".join(
                 f"{t['moment']}: ingest {t['ingest_seconds']} s" for t in trials) + ")")]


# == MLflow down ==========================================================================================


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when the socket is: nothing listens there


def section_mlflow_down(args, ctx: dict) -> dict:
    work = ctx["work"] / "mlflow-down"
    work.mkdir(parents=True)
    ws = make_workspace(work / "ws", ctx["tiny"])
    sh([BIN / "continual", "ingest", clean_csv(work / "one.csv", "one"), "--name", "one"], ws)
    sh([BIN / "dvc", "repro"], ws, timeout=3600)
    sh([BIN / "continual", "ingest", clean_csv(work / "two.csv", "two"), "--name", "two"], ws)
    dead = {**ENV, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{closed_port()}"}
    result: dict[str, Any] = {}
    for attempt in ("first", "second"):
        watched_started = time.perf_counter()
        proc = subprocess.run([str(BIN / "dvc"), "repro"], cwd=ws, env=dead, capture_output=True, text=True)
        total = time.perf_counter() - watched_started
        result[f"{attempt}_exit"] = proc.returncode
        result[f"{attempt}_trained"] = re.findall(r"Running stage 'round@([^']+)'", proc.stdout)
        result[f"{attempt}_seconds"] = round(total, 1)
        result[f"{attempt}_says"] = next((line for line in (proc.stderr + proc.stdout).splitlines()
                                          if "did not answer" in line), "")[:300]
        if attempt == "first":
            kept = complete_rounds(ws)
    # how long the track stage alone takes to give up: time `continual track` by itself
    began = time.perf_counter()
    track = subprocess.run([str(BIN / "continual"), "track"], cwd=ws, env=dead, capture_output=True, text=True)
    result["track_fail_seconds"] = round(time.perf_counter() - began, 1)
    result["track_exit"] = track.returncode
    back = sh([BIN / "dvc", "repro"], ws, check=False, timeout=3600)
    result["back_exit"] = back.returncode
    result["back_trained"] = re.findall(r"Running stage 'round@([^']+)'", back.stdout)
    now = complete_rounds(ws)
    result["retrained"] = [key for key in kept if now.get(key, ("",))[0] != kept[key][0]]
    audit = Auditor(ws).audit(kept)
    result["audit"] = {k: v for k, v in audit.items()}
    log(f"mlflow-down: repro exit {result['first_exit']} (trained {result['first_trained']}) in "
        f"{result['first_seconds']} s, again exit {result['second_exit']} (trained {result['second_trained']}) in "
        f"{result['second_seconds']} s; the track stage alone gives up in {result['track_fail_seconds']} s; "
        f"back: exit {result['back_exit']}, trained {result['back_trained']}, retrained {result['retrained']}, "
        f"problems {audit['problems']}")
    return result


def summarise_mlflow_down(result: dict) -> list[tuple[str, str, str]]:
    return [
        ("mlflow-down", "repro with the tracking server down: exit, round kept",
         f"exit {result['first_exit']}, trained {','.join(result['first_trained']) or '-'} and kept"),
        ("mlflow-down", "fail-fast: `continual track` gives up after",
         f"{result['track_fail_seconds']} s (2nd repro: {result['second_seconds']} s, trained "
         f"{','.join(result['second_trained']) or 'nothing'})"),
        ("mlflow-down", "server back: rounds retrained; audit problems",
         f"{len(result['retrained']) + len(result['back_trained'])}; {len(result['audit']['problems'])}"),
    ]


# == serving: soak and fuzz ==================================================================================


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def register(uri: str, model_dir: Path, name: str, round_index: int) -> str:
    """Log ``model_dir`` as a round logs it (pyfunc) and tag the version as rounds do."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    from continual.tracking import log_pooled_model

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("chaos")
    artifacts = Path(uri.removeprefix("sqlite:///")).parent / "artifacts"
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(
        "chaos", artifact_location=artifacts.as_uri())
    with _use_tracking_uri(uri), mlflow.start_run(experiment_id=experiment_id):
        info = log_pooled_model(model_dir, registered_model_name=name)
    version = str(info.registered_model_version)
    for key, value in {"round": str(round_index), "round_key": f"{round_index:04d}-chaos", "arrival": "chaos"}.items():
        client.set_model_version_tag(name, version, key, value)
    return version


class Server:
    """`python -m service.serve` on 127.0.0.1 in its own process group, its log in a file."""

    def __init__(self, folder: Path, args: list[str], workers: int, env: dict | None = None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = folder / "server.log"
        prometheus = folder / "prometheus"
        shutil.rmtree(prometheus, ignore_errors=True)
        environment = {**ENV, "PROMETHEUS_MULTIPROC_DIR": str(prometheus), **(env or {})}
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "service.serve", *args, "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", str(workers), "--threads", "4", "--set", "compute_threads=1", "--set", "max_length=32"],
                cwd=ROOT, env=environment, stdout=out, stderr=subprocess.STDOUT, process_group=0)

    def wait_ready(self, timeout: float = 300) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log.read_text()[-2000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.base}/v2/health/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.3)
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log.read_text()[-2000:]}")

    def workers(self) -> list[int]:
        import psutil

        with contextlib.suppress(psutil.Error):
            return [child.pid for child in psutil.Process(self.proc.pid).children()]
        return []

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)  # gunicorn's quick stop
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


def section_soak(args, ctx: dict) -> dict:
    import psutil
    import requests
    from mlflow import MlflowClient

    from continual.model import make_tiny_model

    work = ctx["work"] / "soak"
    work.mkdir(parents=True)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    name = "soak"
    versions = [register(uri, ctx["tiny"], name, 1),
                register(uri, make_tiny_model(work / "v2", ["neg", "neu", "pos"], seed=1), name, 2)]
    client = MlflowClient(uri)
    client.set_registered_model_alias(name, "champion", versions[0])
    server = Server(work, ["--registered-model", name, "--tracking-uri", uri, "--poll-seconds", "2"], workers=2)
    duration = float(args.soak_seconds)
    answers: list[tuple[float, str, str]] = []  # (time since start, outcome, version)
    rss: dict[int, list[tuple[float, int]]] = {}
    stop = threading.Event()
    events: dict[str, Any] = {"swaps": [], "killed": None}
    try:
        server.wait_ready()
        start = time.monotonic()

        def client_loop(slot: int) -> None:
            session = requests.Session()
            i = 0
            while not stop.is_set():
                i += 1
                at = time.monotonic() - start
                try:
                    response = session.post(f"{server.base}/predict", timeout=30,
                                            json={"texts": [f"soak client {slot} request {i}", "a second text"]})
                    try:
                        body = response.json()
                        outcome = "ok" if response.status_code == 200 else f"http {response.status_code}"
                        version = str((body.get("model") or {}).get("version", ""))
                    except ValueError:
                        outcome, version = f"not json (http {response.status_code})", ""
                except requests.RequestException as error:
                    outcome, version = f"error {type(error).__name__}", ""
                answers.append((at, outcome, version))

        def swapper() -> None:
            current = 0
            while not stop.wait(30):
                current = 1 - current
                client.set_registered_model_alias(name, "champion", versions[current])
                events["swaps"].append((round(time.monotonic() - start, 1), versions[current]))

        def sampler() -> None:
            while not stop.wait(5):
                at = time.monotonic() - start
                for pid in [server.proc.pid, *server.workers()]:
                    with contextlib.suppress(psutil.Error):
                        rss.setdefault(pid, []).append((at, psutil.Process(pid).memory_info().rss))

        threads = [threading.Thread(target=client_loop, args=(slot,), daemon=True) for slot in range(args.soak_clients)]
        threads += [threading.Thread(target=swapper, daemon=True), threading.Thread(target=sampler, daemon=True)]
        for thread in threads:
            thread.start()
        time.sleep(duration / 2)
        # The worker holding the clients' keep-alive connections: killing an idle one would prove nothing.
        held = {pid: _connections(pid, server.port) for pid in server.workers()}
        victim = max(held, key=held.get)
        os.kill(victim, signal.SIGKILL)
        events["killed"] = (round(time.monotonic() - start, 1), victim)
        events["connections_held"] = held
        log(f"soak: killed worker {victim} at {events['killed'][0]} s, holding {held[victim]} of the clients' "
            f"connections ({held})")
        time.sleep(duration / 2)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        final_workers = server.workers()
    finally:
        stop.set()
        server.stop()
    killed_at = events["killed"][0]
    failures = [(at, outcome) for at, outcome, _ in answers if outcome != "ok"]
    held = [f for f in failures if killed_at - 1 <= f[0] <= killed_at + 30 and f[1].startswith("error")]
    warm = min(30.0, duration / 4)
    growth = {}
    for pid, samples in rss.items():  # each process from `warm` seconds after its first sample (a respawn loads first)
        later = [(at, value) for at, value in samples if at >= samples[0][0] + warm]
        if len(later) >= 2 and pid != events["killed"][1]:
            role = "master" if pid == server.proc.pid else ("respawned worker" if pid in final_workers and
                                                            samples[0][0] > killed_at else "worker")
            growth[f"{role} {pid}"] = {"first_mb": round(later[0][1] / 2**20, 1), "last_mb": round(later[-1][1] / 2**20, 1),
                                       "growth": round(later[-1][1] / later[0][1] - 1, 4),
                                       "from_s": round(later[0][0]), "to_s": round(later[-1][0])}
    served = sorted({version for _, outcome, version in answers if outcome == "ok"})
    result = {"duration_s": duration, "clients": args.soak_clients, "requests": len(answers), "failed": len(failures),
              "failed_held_by_killed_worker": len(held), "failed_other": len(failures) - len(held),
              "failure_kinds": sorted({outcome for _, outcome in failures}), "swaps": events["swaps"],
              "killed": events["killed"], "connections_held_at_kill": {str(k): v for k, v in
                                                                       events.get("connections_held", {}).items()},
              "versions_served": served, "rss": growth,
              "rss_series_mb": {str(pid): [(round(at), round(value / 2**20, 1)) for at, value in samples[::6]]
                                for pid, samples in rss.items()},
              "max_rss_growth": max((g["growth"] for g in growth.values()), default=None)}
    log(f"soak: {len(answers)} requests in {duration:.0f} s, {len(failures)} failed ({len(held)} held by the killed "
        f"worker), {len(events['swaps'])} swaps, versions served {served}, RSS growth {result['max_rss_growth']}")
    return result


def _connections(pid: int, port: int) -> int:
    import psutil

    try:
        return sum(1 for c in psutil.Process(pid).net_connections("tcp")
                   if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port)
    except psutil.Error:
        return 0


def summarise_soak(result: dict) -> list[tuple[str, str, str]]:
    growth = ", ".join(f"{role.rsplit(' ', 1)[0]} {g['first_mb']:.0f}->{g['last_mb']:.0f} MB ({g['growth'] * 100:+.1f}%)"
                       for role, g in result["rss"].items())
    return [
        ("soak", f"{result['duration_s'] / 60:.1f} min, {result['clients']} clients, 2 workers, alias moved every 30 s",
         f"{result['requests']} requests, {len(result['swaps'])} swaps, versions {','.join(result['versions_served'])}"),
        ("soak", "failed requests (held by the worker killed -9 half way / other)",
         f"{result['failed_held_by_killed_worker']} / {result['failed_other']} (it held "
         f"{max(result['connections_held_at_kill'].values(), default=0)} of {result['clients']} connections)"),
        ("soak", "RSS growth after warm-up (target < 10%)", growth or "-"),
    ]


V2_SHAPES = [None, [], [0], [1], [2], [-1], [1, 1], [2, 1], [1, 2], [2, 2], [1, 1, 1], [2**31], [2**63], ["2"],
             [1.5], [True], "2", {}, [None]]
V2_DATATYPES = [None, "BYTES", "FP32", "INT64", "BOOL", "STRING", "bytes", "", 5, ["BYTES"]]
V2_DATA = [["a", "b"], [], [["a"], ["b"]], "ab", None, [1, 2], [None, None], [{"a": 1}, {}], [["a", "b"]],
           [[["a"]], [["b"]]], [True, False], ["\ud800", "b"], ["x" * 20_000, "b"]]


def v2_cases(name: str) -> list[tuple[str, str, bytes, dict]]:
    """(method, path, body, headers): every shape x datatype x data combination, then odd bodies."""
    cases = []
    infer = f"/v2/models/{name}/infer"
    for shape in V2_SHAPES:
        for datatype in V2_DATATYPES:
            for data in V2_DATA:
                tensor = {"name": "text", "shape": shape, "datatype": datatype, "data": data}
                tensor = {k: v for k, v in tensor.items() if v is not None}
                body = json.dumps({"inputs": [tensor]}).encode("utf-8", "surrogatepass")
                cases.append(("POST", infer, body, {"Content-Type": "application/json"}))
    header = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": 9}}]}).encode()
    binary = (5).to_bytes(4, "little") + b"hello"
    for length in ("-1", "0", str(len(header)), str(len(header) + 100), "x", "1e3", str(2**64)):
        for tail in (binary, binary[:6], b"", (2**32 - 1).to_bytes(4, "little") + b"a", b"\xff\xfe\xfd\xfc\xfb"):
            cases.append(("POST", infer, header + tail, {"Inference-Header-Content-Length": length}))
    odd = [b"", b"{", b"null", b"[]", b"\"x\"", b"1e999999", b"-" + b"9" * 5000, b"\xff\xfe", b"{\"inputs\": NaN}",
           ("{\"inputs\": " + "[" * 5000 + "]" * 5000 + "}").encode(), b"[" * 100_000 + b"]" * 100_000,
           b"{\"texts\": [\"a\"], \"texts\": 5}", ("{\"texts\": [\"" + "\\ud800" + "\"]}").encode(),
           json.dumps({"texts": ["a"] * 100_000}).encode(), b"{\"outputs\": [{\"name\": 5}], \"inputs\": []}"]
    for path in ("/predict", infer, f"/v2/models/{name}/versions/1/infer", "/admin/reload", "/v2/models/x/infer"):
        for body in odd:
            cases.append(("POST", path, body, {"Content-Type": "application/json"}))
    for path in ("/", "/v2", f"/v2/models/{name}", "/v2/models/%00", "/v2/models/" + "a" * 5000, "/predict",
                 "/v2/health/ready", "/openapi.json", "/nope", "/admin/reload?force=" + "x" * 3000):
        for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"):
            cases.append((method, path, b"", {}))
    return cases


def section_fuzz(args, ctx: dict) -> dict:
    import requests

    work = ctx["work"] / "fuzz"
    work.mkdir(parents=True)
    server = Server(work, ["--model-uri", str(ctx["tiny"]), "--set", "max_texts=16", "--set", "max_text_chars=2000",
                           "--set", "max_body_bytes=262144"], workers=1, env={"CONTINUAL_ADMIN_TOKEN": "chaos-token"})
    result: dict[str, Any] = {}
    try:
        server.wait_ready()
        name = requests.get(f"{server.base}/", timeout=10).json().get("model", {}).get("name") or "classifier"
        # 1. schemathesis on every operation of the served document
        report = work / "schemathesis"
        command = [str(BIN / "st"), "run", f"{server.base}/openapi.json", "--checks", "all",
                   "--exclude-checks", "positive_data_acceptance", "--max-examples", str(args.fuzz_examples),
                   "--seed", str(args.seed), "--workers", "1", "--generation-database", "none",
                   "--phases", "examples,coverage,fuzzing", "--request-timeout", "20", "--no-color",
                   "--report", "har", "--report-dir", str(report)]
        began = time.perf_counter()
        st = subprocess.run(command, cwd=work, env=ENV, capture_output=True, text=True, timeout=1800)
        result["schemathesis_seconds"] = round(time.perf_counter() - began, 1)
        result["schemathesis_exit"] = st.returncode
        result["schemathesis_tail"] = st.stdout[-1500:]
        entries = []
        for har in [*report.glob("*.har"), *report.glob("har-*.json")]:
            entries += json.loads(har.read_text()).get("log", {}).get("entries", [])
        bad = []
        for entry in entries:
            response, url = entry["response"], entry["request"]["url"]
            text = (response.get("content") or {}).get("text") or ""
            if response["status"] >= 500 or (not _json_exempt(url) and entry["request"]["method"] != "HEAD"
                                             and not _is_json(text)):
                bad.append({"url": url[:200], "method": entry["request"]["method"], "status": response["status"],
                            "body": text[:200]})
        result["schemathesis_requests"] = len(entries)
        result["schemathesis_bad"] = bad[:20]
        result["schemathesis_bad_count"] = len(bad)
        log(f"fuzz: schemathesis exit {st.returncode}, {len(entries)} requests, {len(bad)} 5xx or not JSON "
            f"({result['schemathesis_seconds']} s)")
        # 2. the V2 tensor shapes and datatypes, and odd bodies, by hand
        cases = v2_cases(name)
        bad = []
        session = requests.Session()
        began = time.perf_counter()
        for method, path, body, headers in cases:
            try:
                answer = session.request(method, f"{server.base}{path}", data=body, headers=headers, timeout=60)
            except requests.RequestException as error:
                bad.append({"method": method, "path": path[:80], "body": body[:120].decode(errors="replace"),
                            "error": type(error).__name__})
                session = requests.Session()
                continue
            if answer.status_code >= 500 or (method != "HEAD" and not _json_exempt(path) and not _is_json(answer.text)):
                bad.append({"method": method, "path": path[:80], "body": body[:120].decode(errors="replace"),
                            "status": answer.status_code, "answer": answer.text[:200]})
        result["manual_requests"] = len(cases)
        result["manual_bad"] = bad[:20]
        result["manual_bad_count"] = len(bad)
        result["manual_seconds"] = round(time.perf_counter() - began, 1)
        log(f"fuzz: {len(cases)} V2 shape/datatype/data combinations and odd bodies, {len(bad)} 5xx or not JSON")
        result["server_alive"] = requests.get(f"{server.base}/v2/health/ready", timeout=10).status_code == 200
    finally:
        server.stop()
    return result


def _json_exempt(url: str) -> bool:
    path = url.split("://", 1)[-1].split("/", 1)[-1].split("?", 1)[0]
    return path in ("metrics", "openapi.yaml")


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def summarise_fuzz(result: dict) -> list[tuple[str, str, str]]:
    return [
        ("fuzz", "schemathesis (all checks but positive_data_acceptance): requests, 5xx or not JSON",
         f"{result['schemathesis_requests']}, {result['schemathesis_bad_count']} (exit {result['schemathesis_exit']})"),
        ("fuzz", "V2 shapes x datatypes x data, odd bodies, methods: requests, 5xx or not JSON",
         f"{result['manual_requests']}, {result['manual_bad_count']}"),
    ]


# == main =================================================================================================


def summarise_kill(result: dict) -> list[tuple[str, str, str]]:
    records = [r for r in result["records"] if r["killed"]]
    total = lambda field: sum(r["audit"].get(field, 0) or 0 for r in records)  # noqa: E731
    by_target: dict[str, int] = {}
    for r in records:
        by_target[r["target"]] = by_target.get(r["target"], 0) + 1
    stuck = sum(1 for r in records if not r["recovered"])
    repaired = sum(1 for r in records if r.get("status_hint"))
    loads = sum(1 for r in records if r["audit"].get("champion_loads"))
    problems = sum(1 for r in records if r["audit"]["problems"])
    return [
        ("kill -9", "kills (process group), by target", f"{len(records)}: " + ", ".join(
            f"{name} {n}" for name, n in sorted(by_target.items()))),
        ("kill -9", "stuck after `dvc repro` + `continual status`", f"{stuck}"),
        ("kill -9", "recovered with the command `continual status` printed", f"{repaired}"),
        ("kill -9", "corrupt or half-written rounds", f"{total('corrupt_rounds')}"),
        ("kill -9", "complete rounds retrained", f"{total('retrained')}"),
        ("kill -9", "duplicated / missing MLflow runs", f"{total('duplicated_runs')} / {total('missing_runs')}"),
        ("kill -9", "orphan RUNNING runs", f"{total('running_runs')}"),
        ("kill -9", "registered versions never gated", f"{total('ungated_versions')}"),
        ("kill -9", "champion loads (service.backends)", f"{loads}/{len(records)}"),
        ("kill -9", "leftovers (lock, temp folder, journal)", f"{total('leftovers')}"),
        ("kill -9", "audits with any problem", f"{problems}/{len(records)}"),
        ("kill -9", "recoveries ended by a signal from outside this run, rerun",
         f"{sum(len(r.get('terminated_from_outside', [])) for r in records)}"),
        ("kill -9", "rounds trained in the stream; minutes", f"{result['rounds']}; {result['minutes']}"),
        ("hostile", "accepted fixtures in the kill stream, followed by two successful rounds",
         f"{result['hostile_followed_by_two_rounds']}/{result['hostile_cases']}"),
    ]


def table(rows: list[tuple[str, str, str]]) -> str:
    widths = [max(len(r[i]) for r in rows + [("section", "check", "result")]) for i in range(3)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(("section", "check", "result"), widths)),
             "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections: {', '.join(SECTIONS)}")
    parser.add_argument("--kills", type=int, default=50, help="kill -9 count (kill section)")
    parser.add_argument("--soak-seconds", type=float, default=120, help="soak duration (10 min: 600)")
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "chaos")
    parser.add_argument("--keep-going", action="store_true",
                        help="kill: go on even after three failed recoveries in a row")
    parser.add_argument("--targets", default="", help="kill: only these targets (comma-separated names), e.g. "
                        "alias-move,round-done; default: every one, in turn")
    parser.add_argument("--soak-clients", type=int, default=4, help="soak: concurrent clients")
    parser.add_argument("--fuzz-examples", type=int, default=25, help="fuzz: schemathesis examples per operation")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}")
    args.out = args.out.resolve()  # workspaces are made from other folders
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    import torch

    torch.set_num_threads(1)
    from continual.model import make_tiny_model

    tiny = make_tiny_model(work / "tiny", ["neg", "pos"])
    ctx = {"work": work, "tiny": tiny, "sections": sections}
    rows: list[tuple[str, str, str]] = []
    started = time.perf_counter()
    for section in sections:
        began = time.perf_counter()
        log(f"section {section}")
        result = globals()[f"section_{section.replace('-', '_')}"](args, ctx)
        result["seconds"] = round(time.perf_counter() - began, 1)
        (args.out / f"{section}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
        rows += globals()[f"summarise_{section.replace('-', '_')}"](result)
    text = table(rows)
    print("\n" + text)
    print(f"\nchaos: {', '.join(sections)} in {(time.perf_counter() - started) / 60:.1f} min")
    (args.out / "table.txt").write_text(text + "\n")
    return 0


def summarise_hostile(result: dict) -> list[tuple[str, str, str]]:
    big = result["big"]
    rows = [
        ("hostile", "fixture files / cases", f"{result['files']} / {result['cases']}"),
        ("hostile", "refused with file (+line) named, workspace byte-identical",
         f"{result['refused'] - len(result['refusal_failures'])}/{result['refused']}"),
        ("hostile", "50 MB ingest: exit, seconds, peak RSS",
         f"{big['ingest_exit']}, {big['ingest_seconds']} s, {big['peak_rss_mb']} MB"),
        ("hostile", "50 MB arrival + 2 clean: rounds trained", f"{big.get('rounds', 0)}/3"),
    ]
    if "chain" in result:
        chain = result["chain"]
        rows.append(("hostile", "accepted, followed by two successful rounds",
                     f"{chain['followed_by_two_rounds']}/{chain['accepted']}"))
    else:
        rows.append(("hostile", "accepted, followed by two successful rounds", "in the kill stream (below)"))
    return rows


if __name__ == "__main__":
    sys.exit(main())
