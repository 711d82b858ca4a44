"""An ingest while `dvc repro` runs: both succeed, or the ingest waits."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

from chaos_suite.common import BIN, clean_csv, log, make_workspace, sh, stream_keys
from chaos_suite.kill import Watched, _child


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
