"""Serving and what comes back from it: `serve` (gunicorn over the workspace's registry), `drift` (a window
against the champion's reference) and `capture export` (the texts a server kept, as a CSV to label).
Libraries are imported inside each command, so `--help` stays fast."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from continual.cli.context import open_workspace
from continual.workspace.layout import NotAWorkspace, Workspace

DEFAULT_SERVER = "http://127.0.0.1:8000"
MODEL_VARIABLES = ("CONTINUAL_MODEL_URI", "CONTINUAL_REGISTERED_MODEL", "CONTINUAL_MODELS")  # as service.serve reads them


def cmd_serve(args: argparse.Namespace) -> int:
    """The Flask service under gunicorn, on this workspace's registry unless told otherwise (outside a
    workspace: the shipped params, for a server told which model to serve)."""
    from service.serve import main as serve

    argv = list(args.rest)
    if {"-h", "--help"} & set(argv):
        return serve(argv)  # the server's own options: no workspace is read and nothing is written
    given = {item.partition("=")[0].strip() for flag, item in zip(argv, argv[1:]) if flag == "--set"}
    several = "models" in given or os.environ.get("CONTINUAL_MODELS")  # or --model NAME=URI: no default model then
    named = several or any(a.startswith(("--model", "--registered-model")) for a in argv)
    try:
        ws, params = open_workspace(args)
    except NotAWorkspace as error:
        if not named and not any(os.environ.get(variable) for variable in MODEL_VARIABLES):
            raise NotAWorkspace(f"{error}; or name the model to serve (--model-uri, --registered-model or "
                                "--model NAME=URI)") from None
        ws, params = open_workspace(args, required=False)
    else:
        if not named:
            from continual.registry.model_name import registered_model

            argv += ["--registered-model", registered_model(ws, params)]
    if not any(a.startswith("--tracking-uri") for a in argv):
        from continual.registry.connect import follow_tracking_uri

        uri = follow_tracking_uri(ws, params)  # $MLFLOW_TRACKING_URI first; followed before any worker reads it
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            argv += ["--tracking-uri", uri]
    for key, value in monitoring_settings(ws, params).items():  # --set KEY=VALUE on the command line wins
        if key not in given:
            argv += ["--set", f"{key}={value}"]
    return serve(argv)


def cmd_drift(args: argparse.Namespace) -> int:
    """Drift of a window against the champion's reference: a server's latest check, or a file of texts scored here."""
    from continual.reports.drift import fetch_snapshot, format_scores, read_texts, score_texts, write_report

    if args.texts and (args.url or args.model):
        args.parser.error("--url and --model ask a server; --texts scores a file here: give one or the other")
    if args.model_uri and not args.texts:
        args.parser.error("--model-uri goes with --texts (a server scores with the model it serves)")
    ws, params = open_workspace(args)
    if args.texts:
        from continual.registry.connect import follow_tracking_uri
        from continual.registry.model_name import registered_model

        model_uri = args.model_uri or f"models:/{registered_model(ws, params)}@champion"
        settings = {key: value for key, value in monitoring_settings(ws, params).items() if key.startswith("drift_")}
        settings["tracking_uri"] = follow_tracking_uri(ws, params)  # $MLFLOW_TRACKING_URI first, as everywhere
        snapshot = score_texts(model_uri, read_texts(Path(args.texts)), settings)
    else:
        snapshot = fetch_snapshot(args.url or DEFAULT_SERVER, args.model)
    print(format_scores(snapshot))
    out = write_report(snapshot, Path(args.out) if args.out else ws.reports_dir / "drift.html")
    print(f"\nwrote {out}")
    latest = snapshot.get("latest") or {}
    return 1 if args.fail_on_drift and any((latest.get("drift") or {}).values()) else 0


def cmd_capture_export(args: argparse.Namespace) -> int:
    """The texts a server captured (capture_rate > 0) as a CSV to label, then `continual ingest`."""
    from continual.arrivals.capture import export_captures

    ws, params = open_workspace(args)
    folder = Path(args.dir) if args.dir else capture_folder(ws, params)  # where `continual serve` has it write
    report = export_captures(folder, Path(args.file), params, args.min_confidence, args.max_confidence,
                             neutralise_formulas=not args.keep_formulas)
    print(report.summary())
    print(f"next: correct the label column, then continual ingest {args.file} --name NAME")
    return 0


def monitoring_settings(ws: Workspace, params: dict[str, Any]) -> dict[str, object]:
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


def capture_folder(ws: Workspace, params: dict[str, Any]) -> Path:
    """monitoring.capture.dir, relative to the workspace (default captures/)."""
    folder = Path(((params.get("monitoring") or {}).get("capture") or {}).get("dir") or "captures")
    return folder if folder.is_absolute() else ws.root / folder


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the champion over HTTP (gunicorn); options: continual serve --help",
                       add_help=False)  # its options are service.serve's: it parses them
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("drift", help="drift of the served traffic (--url) or of a file of texts (--texts) against "
                                     "the champion's reference; prints the scores, writes an HTML report")
    p.add_argument("--url", help=f"a running `continual serve` (default {DEFAULT_SERVER})")
    p.add_argument("--model", help="with --url: which of the server's models (V2 name; default its first)")
    p.add_argument("--texts", help="score this CSV/JSONL of texts (e.g. a capture.jsonl) here instead of asking a server")
    p.add_argument("--model-uri", help="with --texts: the model to score with (default models:/NAME@champion)")
    p.add_argument("--out", help="the HTML report (default reports/drift.html)")
    p.add_argument("--fail-on-drift", action="store_true", help="exit 1 when any check is past its threshold")
    p.set_defaults(func=cmd_drift, parser=p)
    p = sub.add_parser("capture", help="texts the server captured (capture_rate): export them to label")
    capture = p.add_subparsers(dest="capture_command", required=True, metavar="COMMAND",
                               help="what to do with the captured texts")
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
