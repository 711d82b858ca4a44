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
- classes      one arrival with 100, 300 and 1,000 labels through ingest, round, report and track: each stage's
               peak RSS (track target: 1 GB), the round registered, no FAILED run, nothing stuck.
- large        100,000 short rows through ingest and dvc repro: seconds per stage and phase, the longest silence.
- folders      ingest, status, verify, report, dvc repro from every folder of a workspace and from outside one.
- paths        a workspace moved, copied and under a folder named 'a %25 b?c#d é' serves and tracks; dvc exp
               run --temp and queued experiments track into the workspace's store: stuck streams, failures.
- soak         gunicorn on loopback under load, the alias moved every 30 s, one worker killed -9 half way, slow
               clients holding half-sent heads and bodies, a pipelining client: failed requests and RSS growth.
- fuzz         schemathesis on every endpoint of service/openapi.yaml, and the V2 tensors' shapes and
               datatypes by hand: no answer that is 5xx or not JSON.

Everything runs on 127.0.0.1 with the tiny random encoder (continual.model.encoder.make_tiny_model), one torch
thread. JSON per section and the table land in --out (default bench/chaos, git-ignored).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from chaos_suite.common import ROOT, log  # noqa: E402
from chaos_suite import classes, concurrent, folders, fuzz, hostile, kill, large, mlflow_down, paths, soak  # noqa: E402

SECTIONS = ("hostile", "kill", "concurrent", "mlflow-down", "classes", "large", "folders", "paths", "soak", "fuzz")
MODULES = {"hostile": hostile, "kill": kill, "concurrent": concurrent, "mlflow-down": mlflow_down, "classes": classes,
           "large": large, "folders": folders, "paths": paths, "soak": soak, "fuzz": fuzz}


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
    parser.add_argument("--slow-clients", type=int, default=40,
                        help="soak: clients that hold a half-sent request (4 in 5 a head, 1 in 5 a body)")
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
    from continual.model.encoder import make_tiny_model

    tiny = make_tiny_model(work / "tiny", ["neg", "pos"])
    ctx = {"work": work, "tiny": tiny, "sections": sections}
    rows: list[tuple[str, str, str]] = []
    started = time.perf_counter()
    for section in sections:
        began = time.perf_counter()
        log(f"section {section}")
        result = getattr(MODULES[section], f"section_{section.replace('-', '_')}")(args, ctx)
        result["seconds"] = round(time.perf_counter() - began, 1)
        (args.out / f"{section}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
        rows += getattr(MODULES[section], f"summarise_{section.replace('-', '_')}")(result)
    text = table(rows)
    print("\n" + text)
    print(f"\nchaos: {', '.join(sections)} in {(time.perf_counter() - started) / 60:.1f} min")
    (args.out / "table.txt").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
