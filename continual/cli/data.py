"""The workspace and its data: `init`, `ingest`, `verify`, `status`, `report`, `repair`, and `demo`, which runs
them all on the VADER domains. Libraries are imported inside each command, so `--help` stays fast."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from continual.cli.context import crash_damage, open_workspace


def cmd_init(args: argparse.Namespace) -> int:
    """A workspace; with --tracking-uri a tracking server (checked before anything is created), with --remote a
    DVC remote (the default one, in the committed .dvc/config)."""
    from continual.params import load_params
    from continual.registry.model_name import registered_model
    from continual.registry.connect import check_server
    from continual.workspace.create import create_workspace

    for uri in dict.fromkeys(filter(None, (os.environ.get("MLFLOW_TRACKING_URI"), args.tracking_uri))):
        check_server(uri)  # an unreachable http(s) server: a clear error, and no workspace
    ws = create_workspace(args.dir, tracking_uri=args.tracking_uri, remote=args.remote)
    print(f"workspace ready at {ws.root}")
    print(f"registered model: {registered_model(ws, load_params(ws.params_file))} "
          "(set tracking.registered_model in params.yaml to choose another)")
    if args.remote:
        print(f"DVC remote: {args.remote} (the default remote in .dvc/config; share data with dvc push / dvc pull)")
    print("next: git commit, continual ingest FILE --name NAME, then dvc repro")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from continual.arrivals.ingest import ingest_file

    ws, params = open_workspace(args)
    try:
        report = ingest_file(ws, Path(args.file), args.name, params)
    except RuntimeError as error:  # dvc add / git add failed; ingest has rolled back what it wrote
        damage = crash_damage(ws)  # e.g. a dvc.lock a killed `dvc repro` left empty: dvc add reads it too
        if damage:
            from continual.workspace.repair import REPAIR_HINT

            raise ValueError("\n".join([str(error), *damage, REPAIR_HINT])) from error
        raise ValueError(str(error)) from error
    print(report.summary())
    print("next: dvc repro")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from continual.arrivals.verify import verify_arrivals

    ws, _ = open_workspace(args)
    verify_arrivals(ws)
    if not ws.stream():  # dvc repro's first stage: failing here leaves no dvc.lock and no stage output behind
        print("continual verify: error: the workspace has no arrivals yet, so dvc repro has nothing to train; "
              "ingest one first (continual ingest FILE --name NAME), then run dvc repro", file=sys.stderr)
        return 1
    marker = ws.root / ".continual" / "verified"
    marker.parent.mkdir(exist_ok=True)
    marker.write_text("every file under data/arrivals/ was ingested\n")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from continual.reports.report import format_matrix, load_round_metrics, write_report

    ws, _ = open_workspace(args)
    write_report(ws)
    rounds = load_round_metrics(ws)
    if rounds:
        print(format_matrix(rounds[-1]["accuracy_matrix"], rounds[-1]["arrivals"]))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from continual.reports.report import format_matrix, format_rounds, load_round_metrics

    ws, params = open_workspace(args)
    rounds = load_round_metrics(ws)
    if args.costs:
        from continual.rounds.costs import format_costs

        print(format_costs(rounds))
        print("seconds per phase (continual/rounds/costs.py); not_train: the share of the wall time outside the "
              "optimiser's epochs")
        return 0
    pending = [k for k in ws.stream() if not (ws.round_dir(k) / "metrics.json").exists()]
    print(format_rounds(rounds))
    print("rows: the arrival's train examples; trained: examples processed (epochs x rows, plus replay); "
          "before: the previous model on the new arrival")
    if rounds:
        from continual.registry.gate import int8_check
        from continual.workspace.storage import format_storage

        print("\naccuracy matrix (row: after round, column: evaluated on arrival)")
        print(format_matrix(rounds[-1]["accuracy_matrix"], rounds[-1]["arrivals"]))
        newest = rounds[-1]["key"]
        print(f"\nint8 ONNX of round {newest} (served by `continual serve` when passed): "
              f"{int8_check(ws, newest, params)}")
        adapter = params["model"].get("adapter", "none")
        print(f"\nstorage (model.adapter: {adapter}; cache +: what the round's output added to the DVC cache)")
        print(format_storage(ws))
    if pending:
        print(f"\nnot trained yet: {', '.join(pending)} (run dvc repro)")
    damage = crash_damage(ws)
    if damage:
        from continual.workspace.repair import REPAIR_HINT

        print("\ncrash damage (a process was killed half way):")
        print("\n".join(f"  {line}" for line in damage))
        print(REPAIR_HINT)
    return 0


def cmd_repair(args: argparse.Namespace) -> int:
    """Put right what a killed process left: a damaged dvc.lock or .dvc/tmp/rwlock, an ingest killed half
    way, round folders half written. Refuses while a dvc command runs in the workspace."""
    from continual.arrivals.journal import recover_after_crash
    from continual.workspace.repair import dvc_processes, repair

    ws, _ = open_workspace(args)
    running = dvc_processes(ws.root)
    if running:
        raise ValueError(f"a dvc command is running in {ws.root} (pid {', '.join(map(str, running))}); "
                         "repair only once it has finished or been stopped")
    done = ([note] if (note := recover_after_crash(ws)) else []) + repair(ws)
    print("\n".join(f"repaired: {line}" for line in done) if done else "nothing to repair")
    print("next: dvc repro")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from continual.cli.demo import run_demo

    return run_demo(Path(args.dir), strategy=args.strategy)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="create a workspace: git + DVC, dvc.yaml, params.yaml, data/arrivals/")
    p.add_argument("dir", help="the folder to make a workspace of (created if missing)")
    p.add_argument("--tracking-uri", help="an MLflow tracking server to log to, written to params.yaml's tracking.uri "
                   "(checked now; $MLFLOW_TRACKING_URI still wins; default: the workspace's own mlflow.db)")
    p.add_argument("--remote", help="a DVC remote for arrivals and rounds (a folder, s3://, gs://, ...): "
                   "`dvc remote add -d storage URL`, staged with the workspace; then dvc push / dvc pull")
    p.set_defaults(func=cmd_init)
    p = sub.add_parser("ingest", help="validate a CSV/JSONL of labelled text and register it as the next arrival")
    p.add_argument("file", help="the arrival: a CSV or JSONL file with text and label columns")
    p.add_argument("--name", required=True, help="arrival name (lower case letters, digits, - and _)")
    p.set_defaults(func=cmd_ingest)
    p = sub.add_parser("verify", help="fail if data/arrivals/ holds anything not ingested (a dvc.yaml stage)")
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("report", help="write reports/: accuracy matrix, curves, plots (a dvc.yaml stage)")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("status", help="print the rounds: arrival, examples, strategy, accuracy, forgetting")
    p.add_argument("--costs", action="store_true", help="each round's seconds per phase (load, train, export, ...)")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("repair", help="put right what a killed process left (damaged dvc.lock, half ingest)")
    p.set_defaults(func=cmd_repair)
    p = sub.add_parser("demo", help="the VADER four-domain demo in a fresh workspace")
    p.add_argument("dir", nargs="?", default="demo", help="the demo workspace, created if missing, resumed if "
                   "not (default %(default)s)")
    p.add_argument("--strategy", default=None, help="override strategy.name for the demo workspace")
    p.set_defaults(func=cmd_demo)
