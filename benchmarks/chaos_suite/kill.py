"""kill -9 at random moments aimed at each phase of a stream, then recovery and an audit after every kill."""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from chaos_suite.common import (
    BIN, ENV, HOSTILE, MODEL_NAME, process_alive, clean_csv, load_make, log, make_workspace, sh, stream_keys,
)


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

        from continual.registry.round_folder import RoundFolder
        from continual.workspace.layout import Workspace

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
                            if process_alive(info.get("pid", 0)):
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
            from continual.registry.champion import history as recorded_history

            history = recorded_history(self.client, MODEL_NAME)
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
        from service.backends.loading import load as load_backend
        from service.model_source import hf_folders, source_for

        source = source_for(f"models:/{MODEL_NAME}@champion", f"sqlite:///{self.ws / 'mlflow.db'}")
        card = source.resolve()
        if card.version != str(champion.version):
            raise RuntimeError(f"the service resolved v{card.version}, the registry says v{champion.version}")
        with tempfile.TemporaryDirectory() as tmp:
            model_dir, tokenizer_dir = hf_folders(source.fetch(card, Path(tmp)))
            choice = backends.choose("auto", model_dir, card, 0.01)  # what `continual serve` would load
            loaded = load_backend(choice, model_dir, tokenizer_dir, card, 32, threads=1)
            (prediction,) = loaded.predict(["a text after a crash"], batch_size=1)
            if prediction.label not in loaded.labels:
                raise RuntimeError(f"predicted {prediction.label!r}, not one of the labels")


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
