"""Where a workspace lives: moved (`mv`), copied (`cp -r`), under a folder named with URL syntax ('%', '?', '#',
spaces, non-ASCII), and run by DVC in a temporary copy (`dvc exp run --temp`, `--queue` + `dvc queue start`).

Each case must serve its champion through `continual serve` and track its next round into the workspace's own
store. Counted: failed commands, /predict requests not answered 200, artifact locations in mlflow.db that name a
folder the workspace is not in, anything written outside the workspace, model versions an experiment printed
that the workspace's store does not hold, and stuck streams (a case whose last `dvc repro` fails or whose
champion does not load)."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from chaos_suite.common import BIN, ENV, MODEL_NAME, clean_csv, free_port, log, make_workspace, sh, stream_keys

ODD = "a %25 b?c#d é"
GIT = ["git", "-c", "user.name=chaos", "-c", "user.email=chaos@localhost", "-c", "commit.gpgsign=false"]
LOCATIONS = (("experiments", "artifact_location"), ("runs", "artifact_uri"), ("logged_models", "artifact_location"),
             ("model_versions", "storage_location"))


def serve_and_predict(ws: Path, log_file: Path, requests_to_send: int = 5) -> dict[str, Any]:
    """`continual serve` in the workspace; how many of a few /predict requests were answered 200, and by which version."""
    import requests

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with log_file.open("w") as out:
        proc = subprocess.Popen([str(BIN / "continual"), "serve", "--host", "127.0.0.1", "--port", str(port),
                                 "--workers", "1"], cwd=ws, env=ENV, stdout=out, stderr=subprocess.STDOUT,
                                process_group=0)
    answered, version = 0, None
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{base}/v2/health/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.3)
        for _ in range(requests_to_send):
            with contextlib.suppress(requests.RequestException):
                answer = requests.post(f"{base}/predict", json={"texts": ["lovely splendid"]}, timeout=30)
                if answer.status_code == 200:
                    answered += 1
                    version = answer.json()["model"]["version"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    said = log_file.read_text()
    return {"sent": requests_to_send, "answered": answered, "version": version,
            "moved_note": next((line for line in said.splitlines() if "when mlflow.db was written" in line), "")}


def stale_locations(ws: Path) -> int:
    """Artifact locations in the workspace's mlflow.db that do not lie under the workspace."""
    if not (ws / "mlflow.db").is_file():
        return 0
    with contextlib.closing(sqlite3.connect(ws / "mlflow.db")) as db:
        values = [value for table, column in LOCATIONS for (value,) in db.execute(f"SELECT {column} FROM {table}")]
    return sum(not value.startswith((ws.as_uri() + "/", f"{ws}/")) for value in values)


def registry(ws: Path) -> dict[str, Any]:
    """The workspace store's versions (each loaded as the server loads it) and champion."""
    from mlflow import MlflowClient

    from continual.registry.local_store import store_uri
    from continual.workspace.layout import Workspace
    from service.model_source import hf_folders, source_for

    uri = store_uri(Workspace.at(ws))
    client = MlflowClient(uri)
    versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{MODEL_NAME}'"))
    unloadable = []
    for version in versions:
        source = source_for(f"models:/{MODEL_NAME}/{version}", uri, uri)
        into = ws.parent / f".load-{ws.name}-{version}"
        try:
            model_dir, _ = hf_folders(source.fetch(source.resolve(), into))
            if not (model_dir / "config.json").is_file():
                unloadable.append(version)
        except Exception:  # noqa: BLE001 - counted, the section goes on
            unloadable.append(version)
        finally:
            shutil.rmtree(into, ignore_errors=True)
    try:
        champion = int(client.get_model_version_by_alias(MODEL_NAME, "champion").version)
    except Exception:  # noqa: BLE001 - no alias: nothing to serve
        champion = None
    return {"versions": versions, "unloadable": unloadable, "champion": champion}


def dvc(ws: Path, *args: str) -> dict[str, Any]:
    """A dvc command: its exit code, its output's tail on failure, and the model versions the track stage printed."""
    done = sh([BIN / "dvc", *args], ws, check=False, timeout=3600)
    return {"exit": done.returncode, "tail": "" if done.returncode == 0 else (done.stdout + done.stderr)[-1500:],
            "printed_versions": [int(v) for v in re.findall(rf"model {MODEL_NAME} v(\d+)", done.stdout)]}


def trained_workspace(root: Path, tiny: Path, salt: str) -> tuple[Path, dict]:
    root.parent.mkdir(parents=True)
    ws = make_workspace(root, tiny, lenient_gate=True)
    sh([BIN / "continual", "ingest", clean_csv(root.parent / f"{salt}.csv", salt), "--name", salt], ws)
    first = dvc(ws, "repro")
    sh([*GIT, "add", "-A"], ws)
    sh([*GIT, "commit", "-qm", "first round"], ws)
    return ws, first


def next_round(ws: Path, salt: str) -> dict[str, Any]:
    sh([BIN / "continual", "ingest", clean_csv(ws.parent / f"{salt}.csv", salt), "--name", salt], ws)
    return dvc(ws, "repro")


def section_paths(args, ctx: dict) -> dict:
    work = ctx["work"] / "paths"
    work.mkdir(parents=True)
    result: dict[str, Any] = {"cases": {}}

    # moved: trained in before/ws, `mv` to after/ws, then served and tracked there
    before, _ = trained_workspace(work / "before" / "ws", ctx["tiny"], "one")
    after = work / "after" / "ws"
    after.parent.mkdir()
    before.rename(after)
    case: dict[str, Any] = {"serve": serve_and_predict(after, work / "moved-serve.log")}
    case["repro"] = next_round(after, "two")
    case["old_folder_recreated"] = before.exists()
    result["cases"]["moved"] = case

    # copied: `cp -r` of the moved workspace; the copy serves and tracks, the original's store is left as it is
    clone = work / "clone" / "ws"
    shutil.copytree(after, clone, symlinks=True)
    original_db = (after / "mlflow.db").read_bytes()
    case = {"serve": serve_and_predict(clone, work / "clone-serve.log"), "repro": next_round(clone, "three")}
    case["original_changed"] = (after / "mlflow.db").read_bytes() != original_db
    result["cases"]["copied"] = case

    # odd characters: created, trained, tracked and served under a folder named with URL syntax
    odd_parent = work / ODD
    odd, first = trained_workspace(odd_parent / "ws", ctx["tiny"], "one")
    case = {"first": first, "serve": serve_and_predict(odd, work / "odd-serve.log"), "repro": next_round(odd, "two")}
    case["outside"] = sorted(set(os.listdir(odd_parent)) - {"ws", "one.csv", "two.csv"}) + \
        sorted(set(os.listdir(work)) - {"before", "after", "clone", ODD, "moved-serve.log", "clone-serve.log",
                                        "odd-serve.log"})
    result["cases"]["odd"] = case

    # DVC's temporary copies, in the moved workspace: --temp, then two queued experiments run by one worker
    sh([*GIT, "add", "-A"], after)
    sh([*GIT, "commit", "-qm", "two rounds"], after)
    held = registry(after)["versions"]
    case = {"temp": dvc(after, "exp", "run", "--temp", "-S", "train.epochs=2")}
    queued = [dvc(after, "exp", "run", "--queue", "-S", f"train.epochs={epochs}") for epochs in (3, 4)]
    case["queue_start"] = dvc(after, "queue", "start")
    deadline = time.monotonic() + 1800
    status = ""
    while time.monotonic() < deadline:
        status = sh([BIN / "dvc", "queue", "status"], after, check=False).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(3)
    case["queue_status"] = status
    case["queued_ok"] = status.count("Success")
    case["queued_exit"] = max(q["exit"] for q in queued)
    case["versions_before"] = held
    case["tmp_stores"] = [str(p.relative_to(after)) for p in (after / ".dvc" / "tmp").rglob("mlflow.db")]
    result["cases"]["experiments"] = case

    for name, case in result["cases"].items():
        ws = {"moved": after, "copied": clone, "odd": odd, "experiments": after}[name]
        case["registry"] = registry(ws)
        case["stale_locations"] = stale_locations(ws)
        exits = [case[key]["exit"] for key in ("repro", "temp", "queue_start", "first") if key in case]
        exits += [case["queued_exit"]] if "queued_exit" in case else []
        case["failed_commands"] = sum(code != 0 for code in exits)
        case["unanswered"] = case["serve"]["sent"] - case["serve"]["answered"] if "serve" in case else 0
        if name == "experiments":  # one --temp, two queued: each retrains every round and registers each, here
            case["expected_versions"] = 3 * len(stream_keys(after))
            case["experiment_versions"] = len(case["registry"]["versions"]) - len(case["versions_before"])
            printed = case["temp"]["printed_versions"]
            case["missing_versions"] = max(0, case["expected_versions"] - case["experiment_versions"]) + \
                sum(v not in case["registry"]["versions"] for v in printed)
        case["stuck"] = bool(case["failed_commands"] or case["registry"]["champion"] is None
                             or case["registry"]["unloadable"] or case["stale_locations"]
                             or case.get("old_folder_recreated") or case.get("original_changed")
                             or case.get("outside") or case.get("missing_versions") or case.get("tmp_stores")
                             or case["unanswered"])
        log(f"paths {name}: failed commands {case['failed_commands']}, unanswered {case['unanswered']}, stale "
            f"locations {case['stale_locations']}, versions {case['registry']['versions']} (unloadable "
            f"{case['registry']['unloadable']}), champion v{case['registry']['champion']}, stuck {case['stuck']}")
    return result


def summarise_paths(result: dict) -> list[tuple[str, str, str]]:
    cases = result["cases"]
    moved, copied, odd, exps = cases["moved"], cases["copied"], cases["odd"], cases["experiments"]

    def served(case: dict) -> str:
        return f"{case['serve']['answered']}/{case['serve']['sent']} (v{case['serve']['version']})"

    return [
        ("paths", "mv: /predict answered; next repro exit; stale locations; old folder recreated",
         f"{served(moved)}; {moved['repro']['exit']}; {moved['stale_locations']}; {int(moved['old_folder_recreated'])}"),
        ("paths", "cp -r: /predict answered; repro exit; stale locations; original store changed",
         f"{served(copied)}; {copied['repro']['exit']}; {copied['stale_locations']}; "
         f"{int(copied['original_changed'])}"),
        ("paths", f"folder {ODD!r}: repro exits; /predict answered; written outside",
         f"{odd['first']['exit']},{odd['repro']['exit']}; {served(odd)}; {len(odd['outside'])}"),
        ("paths", "exp run --temp + 2 queued: exits; versions in the store / expected; loadable; copies' stores",
         f"{exps['temp']['exit']},{exps['queued_exit']},{exps['queue_start']['exit']}; "
         f"{exps['experiment_versions']}/{exps['expected_versions']}; {len(exps['registry']['versions']) - len(exps['registry']['unloadable'])}"
         f"/{len(exps['registry']['versions'])}; {len(exps['tmp_stores'])}"),
        ("paths", "stuck streams; failed commands; unanswered /predict",
         f"{sum(c['stuck'] for c in cases.values())}; {sum(c['failed_commands'] for c in cases.values())}; "
         f"{sum(c['unanswered'] for c in cases.values())}"),
    ]
