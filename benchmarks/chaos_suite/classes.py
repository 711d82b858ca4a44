"""Many classes: one arrival with 100, 300 and 1,000 labels (two rows each) goes through ingest, the round,
the report and the track stage; each stage's peak RSS is read from /usr/bin/time, and the stream must end with
the round registered and no FAILED run (a track stage killed for memory on every retry is a stuck stream)."""
from __future__ import annotations

import csv
import re
import time
from pathlib import Path
from typing import Any

from chaos_suite.common import BIN, MODEL_NAME, log, make_workspace, sh

TIME = Path("/usr/bin/time")
TRACK_TARGET_MB = 1024


def many_labels_csv(path: Path, labels: int, per_label: int = 2) -> Path:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["text", "label"])
        for label in range(labels):
            for row in range(per_label):
                writer.writerow([f"item {row} of class number {label} with words {label * 7 % 13}", f"class-{label:04d}"])
    return path


def timed(cmd: list, cwd: Path) -> dict[str, Any]:
    """Run ``cmd`` under GNU time: exit code, seconds, peak RSS in MB (the largest single process)."""
    began = time.perf_counter()
    done = sh([TIME, "-v", *cmd], cwd, check=False, timeout=3600)
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    return {"exit": done.returncode, "seconds": round(time.perf_counter() - began, 1),
            "peak_mb": round(int(peak.group(1)) / 1024) if peak else None,
            "tail": "" if done.returncode == 0 else (done.stdout + done.stderr)[-1500:]}


def stream_state(ws: Path) -> dict[str, Any]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
    try:
        champion = client.get_model_version_by_alias(MODEL_NAME, "champion").version
    except Exception:  # noqa: BLE001 - no alias yet: the stream has nothing served
        champion = None
    versions = client.search_model_versions(f"name = '{MODEL_NAME}'")
    return {"runs": len(runs), "failed_runs": sum(r.info.status == "FAILED" for r in runs),
            "versions": len(versions), "champion": champion}


def section_classes(args, ctx: dict) -> dict:
    work = ctx["work"] / "classes"
    work.mkdir(parents=True)
    result: dict[str, Any] = {"cases": {}}
    for labels in (100, 300, 1000):
        # a lenient gate: the tiny random encoder cannot pass the real one, and the alias must be seen to move
        ws = make_workspace(work / f"ws{labels}", ctx["tiny"], lenient_gate=True)
        case: dict[str, Any] = {}
        case["ingest"] = timed([BIN / "continual", "ingest", many_labels_csv(work / f"{labels}.csv", labels),
                                "--name", f"labels{labels}"], ws)
        case["round"] = timed([BIN / "dvc", "repro", "report"], ws)  # the round and the report, not the track
        case["report"] = timed([BIN / "continual", "report"], ws)
        case["track"] = timed([BIN / "continual", "track"], ws)
        case["repro"] = timed([BIN / "dvc", "repro"], ws)  # a second pass: nothing left to do, nothing stuck
        case |= stream_state(ws)
        case["stuck"] = any(case[step]["exit"] for step in ("ingest", "round", "report", "track", "repro")) \
            or case["versions"] < 1 or case["failed_runs"] > 0 or case["champion"] is None
        result["cases"][labels] = case
        log(f"classes {labels}: ingest {case['ingest']['seconds']} s, round+report {case['round']['seconds']} s, "
            f"report {case['report']['peak_mb']} MB, track {case['track']['seconds']} s at {case['track']['peak_mb']} MB,"
            f" {case['versions']} version(s), champion {case['champion']}, failed runs {case['failed_runs']}, "
            f"stuck {case['stuck']}")
    return result


def summarise_classes(result: dict) -> list[tuple[str, str, str]]:
    rows = []
    for labels, case in result["cases"].items():
        rows.append(("classes", f"{labels} labels x 2 rows: track stage seconds, peak RSS (target <= "
                     f"{TRACK_TARGET_MB} MB)", f"{case['track']['seconds']} s, {case['track']['peak_mb']} MB"))
        rows.append(("classes", f"{labels} labels: report peak RSS; registered; champion; FAILED runs; stuck",
                     f"{case['report']['peak_mb']} MB; {case['versions']}; v{case['champion']}; "
                     f"{case['failed_runs']}; {int(case['stuck'])}"))
    return rows
