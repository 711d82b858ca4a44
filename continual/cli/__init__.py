"""`continual`: the command line. Each command is a thin layer over a library function; heavy imports
(torch, avalanche, mlflow) happen inside the command that needs them, so `--help` stays fast."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # onnxruntime's telemetry and its database under ~/.cache


def _workspace(args, required: bool = True):
    """The workspace holding -C (default: the current folder), found upwards as git finds its repository.
    Paths the user passes stay relative to the current folder. Not ``required``: the -C folder itself."""
    from continual.params import load_params
    from continual.workspace.layout import NotAWorkspace, Workspace

    try:
        ws = Workspace.find(args.workspace)
    except NotAWorkspace:
        if required:
            raise
        ws = Workspace.at(args.workspace)
    params = load_params(ws.params_file)
    from continual import progress
    progress.configure(params)  # the command's progress bars
    return ws, params


def cmd_init(args) -> int:
    """A workspace; with --tracking-uri a tracking server (checked before anything is created), with --remote a
    DVC remote (the default one, in the committed .dvc/config)."""
    from continual.registry.model_name import registered_model
    from continual.params import load_params
    from continual.registry.tracking import check_server
    from continual.workspace.layout import create_workspace

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


def cmd_ingest(args) -> int:
    from continual.arrivals.ingest import ingest_file

    ws, params = _workspace(args)
    try:
        report = ingest_file(ws, Path(args.file), args.name, params)
    except RuntimeError as error:  # dvc add / git add failed; ingest has rolled back what it wrote
        damage = _crash_damage(ws)  # e.g. a dvc.lock a killed `dvc repro` left empty: dvc add reads it too
        if damage:
            from continual.workspace.layout import REPAIR_HINT

            raise ValueError("\n".join([str(error), *damage, REPAIR_HINT])) from error
        raise ValueError(str(error)) from error
    print(report.summary())
    print("next: dvc repro")
    return 0


def cmd_verify(args) -> int:
    from continual.arrivals.ingest import verify_arrivals

    ws, _ = _workspace(args)
    verify_arrivals(ws)
    if not ws.stream():  # dvc repro's first stage: failing here leaves no dvc.lock and no stage output behind
        print("continual verify: error: the workspace has no arrivals yet, so dvc repro has nothing to train; "
              "ingest one first (continual ingest FILE --name NAME), then run dvc repro", file=sys.stderr)
        return 1
    marker = ws.root / ".continual" / "verified"
    marker.parent.mkdir(exist_ok=True)
    marker.write_text("every file under data/arrivals/ was ingested\n")
    return 0


def cmd_round(args) -> int:
    """Train and write rounds/KEY, nothing else: MLflow is the track stage's job, so an outage there never
    costs a retrain. Nor does a kill: a round finished before DVC could record it is put back, not trained
    again (continual.workspace.layout, "crashes")."""
    import shutil

    from continual.workspace.layout import dead_round_temps, keep_finished_round, restore_finished_round

    ws, params = _workspace(args)
    ws.registered(args.key)
    for folder in dead_round_temps(ws):  # half written by a `continual round` that was killed
        shutil.rmtree(folder, ignore_errors=True)
    inputs = ws.round_inputs(args.key, params)
    if restore_finished_round(ws, args.key, inputs):
        print(f"round {args.key}: restored, not retrained: a `continual round` finished it with these inputs, "
              "but dvc did not record it (killed, or failed after it)")
        return 0
    from continual.progress import ticking

    with ticking(f"round {args.key}: loading torch, transformers and avalanche"):  # ~10 s on 2 busy cores
        _check_model_params(params)
        from continual.rounds.round import run_round

    metrics = run_round(ws, args.key, params)
    keep_finished_round(ws, args.key, inputs)
    print(f"round {metrics['round']} {args.key}: avg_acc {metrics['avg_acc']:.3f}, "
          f"forgetting {metrics['forgetting_avg']:.3f}, bwt {metrics['bwt']:.3f}")
    return 0


def _check_model_params(params: dict) -> None:
    """What the encoder cannot do, refused before a round trains (a later round's model is loaded, not built)."""
    from continual.model.encoder import base_model_path, check_max_length

    check_max_length(base_model_path(params["model"]["base"]), params["model"]["max_length"])


def cmd_track(args) -> int:
    """The track stage: log every round without an MLflow run, then gate the newest round (never in a DVC
    experiment). Fails in seconds when the tracking server is down; the rounds stay as they are."""
    from continual.registry.promotion import track

    ws, params = _workspace(args)
    track(ws, params)
    return 0


def cmd_report(args) -> int:
    from continual.reports.report import format_matrix, load_round_metrics, write_report

    ws, _ = _workspace(args)
    write_report(ws)
    rounds = load_round_metrics(ws)
    if rounds:
        print(format_matrix(rounds[-1]["accuracy_matrix"], rounds[-1]["arrivals"]))
    return 0


def cmd_status(args) -> int:
    from continual.reports.report import format_matrix, format_rounds, load_round_metrics
    from continual.workspace.layout import REPAIR_HINT

    ws, params = _workspace(args)
    rounds = load_round_metrics(ws)
    if args.costs:
        from continual.rounds.costs import format_costs

        print(format_costs(rounds))
        print("seconds per phase (continual/rounds/costs.py); not_train: the share of the wall time outside the optimiser's "
              "epochs")
        return 0
    pending = [k for k in ws.stream() if not (ws.round_dir(k) / "metrics.json").exists()]
    print(format_rounds(rounds))
    print("rows: the arrival's train examples; trained: examples processed (epochs x rows, plus replay); "
          "before: the previous model on the new arrival")
    if rounds:
        print("\naccuracy matrix (row: after round, column: evaluated on arrival)")
        print(format_matrix(rounds[-1]["accuracy_matrix"], rounds[-1]["arrivals"]))
    if rounds:
        from continual.registry.promotion import int8_check

        newest = rounds[-1]["key"]
        print(f"\nint8 ONNX of round {newest} (served by `continual serve` when passed): "
              f"{int8_check(ws, newest, params)}")
    if rounds:
        from continual.workspace.storage import format_storage

        adapter = params["model"].get("adapter", "none")
        print(f"\nstorage (model.adapter: {adapter}; cache +: what the round's output added to the DVC cache)")
        print(format_storage(ws))
    if pending:
        print(f"\nnot trained yet: {', '.join(pending)} (run dvc repro)")
    damage = _crash_damage(ws)
    if damage:
        print("\ncrash damage (a process was killed half way):")
        print("\n".join(f"  {line}" for line in damage))
        print(REPAIR_HINT)
    return 0


def _crash_damage(ws) -> list[str]:
    from continual.arrivals.ingest import interrupted_ingest
    from continual.workspace.layout import crash_damage

    damage = crash_damage(ws)
    journal = interrupted_ingest(ws)
    if journal is not None:
        damage.append(f"an ingest of {journal['key']} (from {journal.get('source', '?')}) was killed half way; "
                      "the next `continual ingest` also rolls it back")
    return damage


def cmd_merge(args) -> int:
    """A round's classifier as one plain folder (a LoRA round's adapters merged), with its ONNX graphs."""
    from continual.model.adapters import is_adapter_folder
    from continual.rounds.export import merged_folder

    ws, _ = _workspace(args)
    ws.registered(args.round)  # a key of stream.yaml, never a path such as ../x
    source, out = ws.round_dir(args.round) / "model", Path(args.out)
    if not (source / "classifier.json").is_file():
        raise ValueError(f"round {args.round} has no model folder ({source}); run dvc repro")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not empty")
    if not is_adapter_folder(source):
        raise ValueError(f"round {args.round} was trained with model.adapter: none: {source} is already one plain "
                         "folder, serve or copy it as it is")
    merged_folder(source, out)
    print(f"merged: {source} -> {out} (serve it with `continual serve --model-uri {out}`)")
    return 0


def cmd_repair(args) -> int:
    """Put right what a killed process left: a damaged dvc.lock or .dvc/tmp/rwlock, an ingest killed half
    way, round folders half written. Refuses while a dvc command runs in the workspace."""
    from continual.arrivals.ingest import recover_after_crash
    from continual.workspace.layout import dvc_processes, repair

    ws, _ = _workspace(args)
    running = dvc_processes(ws.root)
    if running:
        raise ValueError(f"a dvc command is running in {ws.root} (pid {', '.join(map(str, running))}); "
                         "repair only once it has finished or been stopped")
    done = ([note] if (note := recover_after_crash(ws)) else []) + repair(ws)
    print("\n".join(f"repaired: {line}" for line in done) if done else "nothing to repair")
    print("next: dvc repro")
    return 0


def cmd_promote(args) -> int:
    from continual.registry.promotion import promote

    ws, _ = _workspace(args)
    ws.registered(args.round)  # a key of stream.yaml, never a path such as ../x
    promote(ws, args.round)
    return 0


def cmd_rollback(args) -> int:
    from continual.registry.promotion import rollback

    ws, _ = _workspace(args)
    try:
        rollback(ws)
    except RuntimeError as error:  # nothing to roll back to
        raise ValueError(str(error)) from error
    return 0


def cmd_compare(args) -> int:
    ws, params = _workspace(args)  # first: outside a workspace, refused before the slow imports
    from continual.cli.compare import compare, format_table, summarise
    from continual.strategies import STRATEGIES

    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; choose from {', '.join(STRATEGIES)}")
    if not ws.stream():
        raise ValueError("the workspace has no arrivals yet: continual ingest FILE --name NAME first")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [int(params["seed"])]
    _check_model_params(params)
    results = compare(ws, params, strategies, seeds)
    print(format_table(summarise(results)))
    print(f"\nwrote {ws.reports_dir / 'compare.json'} and {ws.reports_dir / 'compare_forgetting.png'}")
    return 0


def cmd_ui(args) -> int:
    """reports/compare.html (forgetting and accuracy against round, every lineage) and `mlflow ui` beside it."""
    ws, params = _workspace(args)
    from continual.registry import tracking
    from continual.cli.ui import start_mlflow_ui, without_credentials, write_report

    uri = tracking.tracking_uri(ws, params)
    remote = uri.lower().startswith(("http://", "https://"))
    mlflow_url = without_credentials(uri) if remote else (None if args.no_server else f"http://127.0.0.1:{args.port}")
    path, count = write_report(ws, params, mlflow_url)
    print(f"forgetting against round, {count} lineage(s): {path.as_uri()}")
    server = None if remote or args.no_server else start_mlflow_ui(uri, args.port)
    if mlflow_url:
        print(f"MLflow: {mlflow_url}")
    if not args.no_browser:
        import webbrowser

        webbrowser.open(path.as_uri())
    if server is None:
        return 0
    print("mlflow ui runs until Ctrl-C")
    try:
        return server.wait()
    except KeyboardInterrupt:
        server.terminate()
        server.wait(timeout=30)
        return 0


def cmd_serve(args) -> int:
    """The Flask service under gunicorn, on this workspace's registry unless told otherwise (outside a
    workspace: the shipped params, for a server given --model-uri)."""
    ws, params = _workspace(args, required=False)
    argv = list(args.rest)
    given = {item.partition("=")[0].strip() for flag, item in zip(argv, argv[1:]) if flag == "--set"}
    several = "models" in given or os.environ.get("CONTINUAL_MODELS")  # or --model NAME=URI: no default model then
    if not several and not any(a.startswith(("--model", "--registered-model")) for a in argv):
        from continual.registry.model_name import registered_model

        argv += ["--registered-model", registered_model(ws, params)]
    if not any(a.startswith("--tracking-uri") for a in argv):
        from continual.registry.local_store import follow_move
        from continual.registry.tracking import tracking_uri

        uri = tracking_uri(ws, params)  # $MLFLOW_TRACKING_URI first
        follow_move(ws, uri)  # before any worker reads it: a moved workspace's store points at its new folder
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            argv += ["--tracking-uri", uri]
    for key, value in monitoring_settings(ws, params).items():  # --set KEY=VALUE on the command line wins
        if key not in given:
            argv += ["--set", f"{key}={value}"]
    from service.serve import main as serve

    return serve(argv)


def cmd_capture_export(args) -> int:
    """The texts a server captured (capture_rate > 0) as a CSV to label, then `continual ingest`."""
    from continual.arrivals.capture import export_captures

    ws, params = _workspace(args)
    folder = Path(args.dir) if args.dir else capture_folder(ws, params)  # where `continual serve` has it write
    report = export_captures(folder, Path(args.file), params, args.min_confidence, args.max_confidence,
                             neutralise_formulas=not args.keep_formulas)
    print(report.summary())
    print(f"next: correct the label column, then continual ingest {args.file} --name NAME")
    return 0


def cmd_drift(args) -> int:
    """Drift of a window against the champion's reference: a server's latest check, or a file of texts scored here."""
    from continual.reports.drift import fetch_snapshot, format_scores, read_texts, score_texts, write_report

    ws, params = _workspace(args)
    if args.texts:
        from continual.registry.local_store import follow_move
        from continual.registry.model_name import registered_model
        from continual.registry.tracking import tracking_uri

        model_uri = args.model_uri or f"models:/{registered_model(ws, params)}@champion"
        settings = {key: value for key, value in monitoring_settings(ws, params).items() if key.startswith("drift_")}
        settings["tracking_uri"] = tracking_uri(ws, params)  # $MLFLOW_TRACKING_URI first, as everywhere
        follow_move(ws, settings["tracking_uri"])
        snapshot = score_texts(model_uri, read_texts(Path(args.texts)), settings)
    else:
        snapshot = fetch_snapshot(args.url, args.model)
    print(format_scores(snapshot))
    out = write_report(snapshot, Path(args.out) if args.out else ws.reports_dir / "drift.html")
    print(f"\nwrote {out}")
    latest = snapshot.get("latest") or {}
    return 1 if args.fail_on_drift and any((latest.get("drift") or {}).values()) else 0


def monitoring_settings(ws, params: dict) -> dict[str, object]:
    """params.yaml's monitoring section and the serving timeouts as the server's config keys
    (service.config.ServiceConfig)."""
    section = params.get("monitoring") or {}
    thresholds, capture = section.get("thresholds") or {}, section.get("capture") or {}
    settings = {"monitoring": section.get("enabled"), "monitoring_window": section.get("window"),
                "monitoring_interval_s": section.get("interval_s"), "monitoring_min_texts": section.get("min_texts"),
                **{f"drift_{check}": value for check, value in thresholds.items()},
                "capture_rate": capture.get("rate"), "capture_max_rows": capture.get("max_rows"),
                "capture_max_bytes": capture.get("max_bytes"), "capture_anonymous": capture.get("anonymous"),
                "capture_dir": capture_folder(ws, params) if capture.get("rate") else None}
    serving = params.get("serving") or {}  # slow clients: deadlines for a request's head and body
    settings |= {key: serving.get(key) for key in ("read_header_timeout_s", "read_body_timeout_s")}
    return {key: value for key, value in settings.items() if value is not None}


def capture_folder(ws, params: dict) -> Path:
    """monitoring.capture.dir, relative to the workspace (default captures/)."""
    folder = Path(((params.get("monitoring") or {}).get("capture") or {}).get("dir") or "captures")
    return folder if folder.is_absolute() else ws.root / folder


def cmd_demo(args) -> int:
    from continual.cli.demo import run_demo

    return run_demo(Path(args.dir), strategy=args.strategy)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="continual", description="Continual learning for text classifiers: DVC-versioned arrivals, "
        "incremental rounds with replay/EWC, MLflow tracking.")
    parser.add_argument("-C", "--workspace", default=".", help="a folder in the workspace (default: the current "
                        "one); the workspace is the nearest folder at or above it holding stream.yaml")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("init", help="create a workspace: git + DVC, dvc.yaml, params.yaml, data/arrivals/")
    p.add_argument("dir")
    p.add_argument("--tracking-uri", help="an MLflow tracking server to log to, written to params.yaml's tracking.uri "
                   "(checked now; $MLFLOW_TRACKING_URI still wins; default: the workspace's own mlflow.db)")
    p.add_argument("--remote", help="a DVC remote for arrivals and rounds (a folder, s3://, gs://, ...): "
                   "`dvc remote add -d storage URL`, staged with the workspace; then dvc push / dvc pull")
    p.set_defaults(func=cmd_init)
    p = sub.add_parser("ingest", help="validate a CSV/JSONL of labelled text and register it as the next arrival")
    p.add_argument("file")
    p.add_argument("--name", required=True, help="arrival name (lower case letters, digits, - and _)")
    p.set_defaults(func=cmd_ingest)
    p = sub.add_parser("verify", help="fail if data/arrivals/ holds anything not ingested (a dvc.yaml stage)")
    p.set_defaults(func=cmd_verify)
    p = sub.add_parser("round", help="train and evaluate one round (a dvc.yaml stage; run dvc repro instead)")
    p.add_argument("key")
    p.set_defaults(func=cmd_round)
    p = sub.add_parser("report", help="write reports/: accuracy matrix, curves, plots (a dvc.yaml stage)")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("track", help="log rounds to MLflow and gate the newest for the champion (a dvc.yaml stage)")
    p.set_defaults(func=cmd_track)
    p = sub.add_parser("status", help="print the rounds: arrival, examples, strategy, accuracy, forgetting")
    p.add_argument("--costs", action="store_true", help="each round's seconds per phase (load, train, export, ...)")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("repair", help="put right what a killed process left (damaged dvc.lock, half ingest)")
    p.set_defaults(func=cmd_repair)
    p = sub.add_parser("merge", help="write a LoRA round's model as one plain folder (adapters merged), servable")
    p.add_argument("round", help="round key, e.g. 0002-movies")
    p.add_argument("out", help="the folder to write (must not exist or be empty)")
    p.set_defaults(func=cmd_merge)
    p = sub.add_parser("promote", help="move the champion alias to a round's registered model, by hand")
    p.add_argument("round", help="round key, e.g. 0002-movies")
    p.set_defaults(func=cmd_promote)
    p = sub.add_parser("rollback", help="move the champion alias back to the previous champion")
    p.set_defaults(func=cmd_rollback)
    p = sub.add_parser("compare", help="replay the stream under several strategies; one MLflow lineage each")
    p.add_argument("--strategies", default="naive,replay,ewc,replay+ewc,joint,ridge,adapt")  # ridge: frozen baseline
    p.add_argument("--seeds", default="", help="comma-separated seeds (default: params seed)")
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("ui", help="open forgetting against round for every lineage (reports/compare.html), with "
                                  "`mlflow ui` on the workspace's store beside it")
    p.add_argument("--port", type=int, default=5000, help="mlflow ui's port on 127.0.0.1 (default %(default)s)")
    p.add_argument("--no-server", action="store_true", help="write the page only; start no mlflow ui")
    p.add_argument("--no-browser", action="store_true", help="print where the page is instead of opening it")
    p.set_defaults(func=cmd_ui)
    p = sub.add_parser("serve", help="serve the champion over HTTP (gunicorn); options: continual serve --help",
                       add_help=False)
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("drift", help="drift of the served traffic (--url) or of a file of texts (--texts) against "
                                     "the champion's reference; prints the scores, writes an HTML report")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="a running `continual serve` (default %(default)s)")
    p.add_argument("--model", help="with --url: which of the server's models (V2 name; default its first)")
    p.add_argument("--texts", help="score this CSV/JSONL of texts (e.g. a capture.jsonl) here instead of asking a server")
    p.add_argument("--model-uri", help="with --texts: the model to score with (default models:/NAME@champion)")
    p.add_argument("--out", help="the HTML report (default reports/drift.html)")
    p.add_argument("--fail-on-drift", action="store_true", help="exit 1 when any check is past its threshold")
    p.set_defaults(func=cmd_drift)
    p = sub.add_parser("capture", help="texts the server captured (capture_rate): export them to label")
    capture = p.add_subparsers(dest="capture_command", required=True)
    p = capture.add_parser("export", help="write the captured texts as a CSV to label and `continual ingest`: "
                           "label = the prediction, least confident first, identical texts once")
    p.add_argument("file", help="the CSV to write (*.csv)")
    p.add_argument("--dir", default=None, help="the capture folder (default: params.yaml's monitoring.capture.dir, "
                   "else <workspace>/captures)")
    p.add_argument("--min-confidence", type=float, default=None, help="only texts predicted at least this sure")
    p.add_argument("--max-confidence", type=float, default=None, help="only texts predicted at most this sure")
    p.add_argument("--keep-formulas", action="store_true", help="write cells that start with =, +, -, @, a tab or CR "
                   "as captured (default: with a leading ' so that a spreadsheet does not run them as formulas)")
    p.set_defaults(func=cmd_capture_export)
    p = sub.add_parser("demo", help="the VADER four-domain demo in a fresh workspace")
    p.add_argument("dir", nargs="?", default="demo")
    p.add_argument("--strategy", default=None, help="override strategy.name for the demo workspace")
    p.set_defaults(func=cmd_demo)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that describe the input or the environment, not a bug: one line each, no traceback."""
    import subprocess

    import yaml

    # Not RuntimeError: torch raises it for bugs; commands turn their own runtime failures into ValueError.
    errors: tuple[type[BaseException], ...] = (LookupError, ValueError, OSError, yaml.YAMLError,
                                               subprocess.CalledProcessError)
    exceptions = sys.modules.get("mlflow.exceptions")  # only if a command imported mlflow: keep --help fast
    if exceptions is not None:
        errors += (exceptions.MlflowException,)
    return errors


def _message(error: BaseException) -> str:
    if isinstance(error, KeyError):  # str(KeyError("x")) is just "'x'"
        return f"missing key {error}"
    text = str(error).strip() or type(error).__name__
    return text.replace("\n", "\n  ")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "serve":  # serve hands its own options to service.serve
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    from continual.workspace.layout import NotAWorkspace

    try:
        return args.func(args)
    except NotAWorkspace as error:  # not a usage error: the command is right, the place is wrong
        print(f"continual {args.command}: error: {_message(error)}", file=sys.stderr)
        return 1
    except Exception as error:
        if os.environ.get("CONTINUAL_TRACEBACK") or not isinstance(error, _user_errors()):
            raise
        print(f"continual {args.command}: error: {_message(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
