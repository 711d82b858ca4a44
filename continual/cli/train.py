"""Rounds and the champion: `round` and `track` (dvc.yaml stages), `promote`, `rollback`, `merge`, and the
side-by-side views `compare` and `ui`. Libraries are imported inside each command, so `--help` stays fast."""
from __future__ import annotations

import argparse
from pathlib import Path

from continual.cli.context import open_workspace
from continual.rounds.safe_round import check_model_params, train_round

DEFAULT_STRATEGIES = "naive,replay,ewc,replay+ewc,joint,ridge,adapt"  # ridge: the frozen-encoder baseline


def cmd_round(args: argparse.Namespace) -> int:
    """Train and write rounds/KEY, nothing else: MLflow is the track stage's job, so an outage there never
    costs a retrain. Nor does a kill (continual.rounds.safe_round)."""
    ws, params = open_workspace(args)
    done = train_round(ws, args.key, params)
    if done.restored:
        print(f"round {args.key}: restored, not retrained: a `continual round` finished it with these inputs, "
              "but dvc did not record it (killed, or failed after it)")
        return 0
    metrics = done.metrics
    print(f"round {metrics['round']} {args.key}: avg_acc {metrics['avg_acc']:.3f}, "
          f"forgetting {metrics['forgetting_avg']:.3f}, bwt {metrics['bwt']:.3f}")
    return 0


def cmd_track(args: argparse.Namespace) -> int:
    """The track stage: log every round without an MLflow run, then gate the newest round (never in a DVC
    experiment). Fails in seconds when the tracking server is down; the rounds stay as they are."""
    from continual.registry.track import track

    ws, params = open_workspace(args)
    track(ws, params)
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from continual.registry.champion import promote

    ws, _ = open_workspace(args)
    ws.registered(args.round)  # a key of stream.yaml, never a path such as ../x
    promote(ws, args.round)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from continual.registry.champion import rollback

    ws, _ = open_workspace(args)
    try:
        rollback(ws)
    except RuntimeError as error:  # nothing to roll back to
        raise ValueError(str(error)) from error
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    """A round's classifier as one plain folder (a LoRA round's adapters merged), with its ONNX graphs."""
    from continual.model.adapters import is_adapter_folder
    from continual.rounds.export import merged_folder

    ws, _ = open_workspace(args)
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


def cmd_compare(args: argparse.Namespace) -> int:
    ws, params = open_workspace(args)  # first: outside a workspace, refused before the slow imports
    from continual.cli.compare import compare, format_table, summarise
    from continual.strategies import STRATEGIES

    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise ValueError(f"unknown strategies {unknown}; choose from {', '.join(STRATEGIES)}")
    if not ws.stream():
        raise ValueError("the workspace has no arrivals yet: continual ingest FILE --name NAME first")
    seeds = args.seeds or [int(params["seed"])]
    check_model_params(params)
    results = compare(ws, params, strategies, seeds)
    print(format_table(summarise(results)))
    print(f"\nwrote {ws.reports_dir / 'compare.json'} and {ws.reports_dir / 'compare_forgetting.png'}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """reports/compare.html (forgetting and accuracy against round, every lineage) and `mlflow ui` beside it."""
    ws, params = open_workspace(args)
    from continual.cli.ui import start_mlflow_ui, without_credentials, write_report
    from continual.registry.connect import tracking_uri

    uri = tracking_uri(ws, params)
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


def seed_list(text: str) -> list[int]:
    """--seeds: comma-separated integers; anything else is a usage error."""
    try:
        return [int(seed) for seed in text.split(",") if seed.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated integers, not {text!r}") from None


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("round", help="train and evaluate one round (a dvc.yaml stage; run dvc repro instead)")
    p.add_argument("key", help="the arrival's key in stream.yaml, e.g. 0002-movies")
    p.set_defaults(func=cmd_round)
    p = sub.add_parser("track", help="log rounds to MLflow and gate the newest for the champion (a dvc.yaml stage)")
    p.set_defaults(func=cmd_track)
    p = sub.add_parser("promote", help="move the champion alias to a round's registered model, by hand")
    p.add_argument("round", help="round key, e.g. 0002-movies")
    p.set_defaults(func=cmd_promote)
    p = sub.add_parser("rollback", help="move the champion alias back to the previous champion")
    p.set_defaults(func=cmd_rollback)
    p = sub.add_parser("merge", help="write a LoRA round's model as one plain folder (adapters merged), servable")
    p.add_argument("round", help="round key, e.g. 0002-movies")
    p.add_argument("out", help="the folder to write (must not exist or be empty)")
    p.set_defaults(func=cmd_merge)
    p = sub.add_parser("compare", help="replay the stream under several strategies; one MLflow lineage each")
    p.add_argument("--strategies", default=DEFAULT_STRATEGIES, help="comma-separated strategy names "
                   "(default %(default)s)")
    p.add_argument("--seeds", type=seed_list, default=[], help="comma-separated seeds (default: params seed)")
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("ui", help="open forgetting against round for every lineage (reports/compare.html), with "
                                  "`mlflow ui` on the workspace's store beside it")
    p.add_argument("--port", type=int, default=5000, help="mlflow ui's port on 127.0.0.1 (default %(default)s)")
    p.add_argument("--no-server", action="store_true", help="write the page only; start no mlflow ui")
    p.add_argument("--no-browser", action="store_true", help="print where the page is instead of opening it")
    p.set_defaults(func=cmd_ui)
