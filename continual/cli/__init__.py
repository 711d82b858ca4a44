"""`continual`: the command line, the top layer. It owns the parser, the exit codes and the commands, each a
thin layer over a library function: `data` (init, ingest, verify, status, report, repair, demo), `train`
(round, track, promote, rollback, merge, compare, ui), `serving` (serve, drift, capture export). It may import
every lower layer of continual/ and service/; nothing imports it. Heavy imports (torch, avalanche, mlflow)
happen inside the command that needs them, so `--help` stays fast.

Exit codes: 0 done, 1 the command failed (one line on stderr: what went wrong, outside a workspace included),
2 a usage error (argparse: an unknown option, a missing argument, options that do not go together).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

# Before any library is imported: huggingface_hub and mlflow read these when they load.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # onnxruntime's telemetry and its database under ~/.cache

import yaml

from continual.cli import data, serving, train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="continual", description="Continual learning for text classifiers: DVC-versioned arrivals, "
        "incremental rounds with replay/EWC, MLflow tracking.")
    parser.add_argument("-C", "--workspace", default=".", help="a folder in the workspace (default: the current "
                        "one); the workspace is the nearest folder at or above it holding stream.yaml")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="one of these; `continual COMMAND --help` for its options")
    for group in (data, train, serving):
        group.add_commands(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that describe the input or the environment, not a bug: one line each, no traceback. A ValueError
    covers a params.yaml the schema refuses; LookupError a command run outside a workspace."""
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
    args, rest = parser.parse_known_args(argv)  # a usage error exits here with 2, before any command runs
    if rest and args.command != "serve":  # serve hands its own options to service.serve
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    try:
        return args.func(args)
    except Exception as error:
        if os.environ.get("CONTINUAL_TRACEBACK") or not isinstance(error, _user_errors()):
            raise
        print(f"continual {args.command}: error: {_message(error)}", file=sys.stderr)
        return 1
