"""MLflow down during a round, then back: fail fast, nothing retrained."""
from __future__ import annotations

import re
import socket
import subprocess
import time
from typing import Any

from chaos_suite.common import BIN, ENV, clean_csv, log, make_workspace, sh
from chaos_suite.kill import Auditor, complete_rounds


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
