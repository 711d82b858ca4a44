"""Run the model server under gunicorn (workers x threads); --debug only turns on debug logging.

    python -m service.serve --registered-model NAME --port 8000 --workers 2 --threads 4
    python -m service.serve --model sentiment=models:/sentiment@champion --model topics=models:/topics@champion
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from gunicorn.app.base import BaseApplication

from service import gunicorn_conf
from service.backends import BACKENDS
from service.model_map import parse_model_args
from service.redaction import install_log_redaction


class GunicornServer(BaseApplication):
    """Gunicorn driven from Python; each worker builds its own app from the same service config."""

    def __init__(self, service_config: dict[str, Any], options: dict[str, Any]):
        self.service_config = service_config
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        from service import create_app

        return create_app(self.service_config)


def gunicorn_options(host: str, port: int, workers: int, threads: int, debug: bool = False) -> dict[str, Any]:
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return {
        "loglevel": "debug" if debug else "info",
        "bind": address,
        "workers": workers,
        "threads": threads,
        "worker_class": gunicorn_conf.worker_class,
        "timeout": gunicorn_conf.timeout,
        "graceful_timeout": gunicorn_conf.graceful_timeout,
        "accesslog": gunicorn_conf.accesslog,
        "access_log_format": gunicorn_conf.access_log_format,
        "worker_tmp_dir": gunicorn_conf.worker_tmp_dir,
        "control_socket_disable": gunicorn_conf.control_socket_disable,
        "on_starting": gunicorn_conf.on_starting,
        "child_exit": gunicorn_conf.child_exit,
    }


def run_server(config: dict[str, Any], host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
               threads: int = 4, debug: bool = False) -> None:
    """Serve until stopped. ``config``: the keys of service.config.ServiceConfig.

    ``debug`` means debug logging and nothing else: Werkzeug's interactive debugger runs any Python a
    client sends it, so no flag of this server turns it on."""
    install_log_redaction()  # every record gets a request_id ("-" in the master) and no credentials
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s [%(process)d] %(levelname)s %(name)s [%(request_id)s]: "
                                           "%(message)s", defaults={"request_id": "-"}))
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, handlers=[handler])
    GunicornServer(config, gunicorn_options(host, port, workers, threads, debug)).run()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="service.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-uri", help="models:/NAME@alias, models:/NAME/VERSION, runs:/... or a folder")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=URI", dest="models",
                        help="serve several models: one V2 model name each, URI as for --model-uri (repeatable; "
                             "instead of --model-uri / --registered-model)")
    parser.add_argument("--registered-model", help="registered model name (with --alias)")
    parser.add_argument("--alias", help="registry alias to follow (default champion)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI)")
    parser.add_argument("--poll-seconds", type=float, help="look for a moved alias this often; 0 = never")
    parser.add_argument("--backend", choices=BACKENDS,
                        help="auto (default: int8 ONNX when the gate passed it, else fp32) | onnx-int8 | onnx | torch")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other service config key, e.g. --set max_batch_size=16 (repeatable)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=gunicorn_conf.workers)
    parser.add_argument("--threads", type=int, default=gunicorn_conf.threads)
    parser.add_argument("--debug", action="store_true", help="debug logging (never an interactive debugger)")
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set wants KEY=VALUE, got {item!r}")
        config[key.strip()] = value
    named = {"model_uri": args.model_uri, "registered_model": args.registered_model, "alias": args.alias,
             "tracking_uri": args.tracking_uri, "poll_seconds": args.poll_seconds, "backend": args.backend}
    config.update({key: value for key, value in named.items() if value is not None})
    if args.models:
        config["models"] = parse_model_args(args.models)  # ValueError: exit 2 with the message
    return config


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = config_from_args(args)
    from service.config import load_config

    settings = load_config(config)  # a typo in a key or value fails here, before any worker starts
    if settings.source_uri is None and not settings.models:
        raise ValueError("no model to serve: give --model-uri, --registered-model or --model NAME=URI "
                         "(or CONTINUAL_MODEL_URI, CONTINUAL_REGISTERED_MODEL, CONTINUAL_MODELS)")
    if settings.compute_threads == 0:
        config["compute_threads"] = gunicorn_conf.compute_threads_per_worker(args.workers)
    gunicorn_conf.check_multiproc_dir()  # before gunicorn, whose on_starting would only say "Error: ..."
    run_server(config, args.host, args.port, args.workers, args.threads, args.debug)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except ValueError as error:
        print(f"service.serve: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
