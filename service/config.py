"""The server's settings: one dataclass, filled from a dict, then the environment, then defaults."""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, Mapping

from service.backends import BACKENDS
from service.model_map import parse_models
from service.monitoring.capture import check_capture_settings

# Keys whose environment variable is not simply CONTINUAL_<KEY>: MLflow's own names win, so the
# server finds the same tracking server as every other MLflow tool in the shell.
ENV_NAMES = {
    "tracking_uri": "MLFLOW_TRACKING_URI",
    "registry_uri": "MLFLOW_REGISTRY_URI",
}


@dataclass(frozen=True)
class ServiceConfig:
    model_uri: str | None = None          # models:/NAME@alias, models:/NAME/3, runs:/..., or a local folder
    # Several models, one V2 name each: (name, uri) pairs, given as a mapping or JSON (service.model_map).
    # Instead of model_uri / registered_model; each one hot-swaps on its own.
    models: tuple[tuple[str, str], ...] = ()
    registered_model: str | None = None   # with ``alias``: the same as model_uri models:/NAME@alias
    alias: str = "champion"
    tracking_uri: str | None = None
    registry_uri: str | None = None
    poll_seconds: float = 0.0             # how often to look whether the alias moved; 0 = never
    admin_token: str | None = None        # unset: /admin/* answers 403
    batching: bool = True
    max_batch_size: int = 32              # texts in one forward pass
    max_wait_ms: float = 5.0              # how long the first request of a batch waits for company
    max_texts: int = 64                   # texts in one request; more -> 422 (the schema's maxItems)
    max_text_chars: int = 10_000          # one text longer than this -> 422 (the model reads 128 tokens)
    # Request body larger than this -> 413. 4 MiB admits every schema-valid request even with each
    # character \u-escaped (64 texts x 10,000 chars x 6 bytes): only the byte limit answers 413.
    max_body_bytes: int = 4 * 1024 * 1024
    max_length: int = 128                 # tokens; longer texts are truncated and flagged
    model_name: str | None = None         # name on /v2/models/{name}; default: the registered model's name
    request_timeout_s: float = 30.0       # a request waiting longer than this on the batcher gets 503
    # A client has this long to send its request's headers (from their first byte), then its body (from the
    # end of the headers), else 408 and the connection closes. Requests are read in full before a thread
    # serves them (service.gunicorn_worker), so slow clients cost no thread, only these seconds.
    read_header_timeout_s: float = 10.0
    read_body_timeout_s: float = 30.0
    backend: str = "auto"                 # auto | onnx-int8 | onnx | torch (service.backends)
    max_quantized_drop: float = 0.01      # auto on a folder no gate judged: int8 only within this of fp32
    compute_threads: int = 0              # intra-op threads per worker; 0 = the cores this process may use,
                                          # divided by $CONTINUAL_SERVE_WORKERS (service.gunicorn_conf)
    # Monitoring (service.monitoring); `continual serve` fills these from params.yaml's monitoring section.
    monitoring: bool = True               # window of recent traffic, drift checks, prediction counters
    monitoring_window: int = 500          # texts in the sliding window, per worker
    monitoring_interval_s: float = 30.0   # seconds between drift checks (a background thread)
    monitoring_min_texts: int = 100       # no scores until the window holds this many texts
    drift_embedding_auc: float = 0.55     # thresholds: a check above its threshold is drift
    drift_label_psi: float = 0.2
    drift_length_psi: float = 0.2
    drift_confidence_drop: float = 0.1
    capture_rate: float = 0.0             # share of served texts sampled into capture_dir (opt-in)
    capture_max_rows: int = 10_000        # rows per capture file (one older file kept)
    capture_max_bytes: int = 16 * 1024 * 1024  # bytes per capture file: the folder holds at most twice this
    capture_anonymous: bool = False       # False: only requests with the admin bearer token are sampled
    capture_dir: str | None = None

    @property
    def drift_thresholds(self) -> dict[str, float]:
        return {"embedding_auc": self.drift_embedding_auc, "label_psi": self.drift_label_psi,
                "length_psi": self.drift_length_psi, "confidence_drop": self.drift_confidence_drop}

    @property
    def source_uri(self) -> str | None:
        if self.model_uri:
            return self.model_uri
        if self.registered_model:
            return f"models:/{self.registered_model}@{self.alias}"
        return None


def _parse(value: Any, kind: type, key: str) -> Any:
    if not isinstance(value, str):
        return value
    if kind is bool:
        if value.strip().lower() in {"1", "true", "yes", "on"}:
            return True
        if value.strip().lower() in {"0", "false", "no", "off", ""}:
            return False
        raise ValueError(f"{key}: {value!r} is not a boolean")
    if kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            raise ValueError(f"{key}: {value!r} is not {'an integer' if kind is int else 'a number'}") from None
    return value or None


def load_config(config: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> ServiceConfig:
    """``config`` keys win over environment variables (CONTINUAL_<KEY>, MLflow's names) over defaults."""
    config = dict(config or {})
    environ = os.environ if environ is None else environ
    known = {field.name: field for field in fields(ServiceConfig)}
    unknown = sorted(set(config) - set(known))
    if unknown:
        raise ValueError(f"unknown service config keys: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, field in known.items():
        kind = type(field.default) if field.default is not None else str
        parse = parse_models if name == "models" else (lambda value, key, kind=kind: _parse(value, kind, key))
        if name in config and config[name] is not None:
            values[name] = parse(config[name], name)
        elif (env := ENV_NAMES.get(name, f"CONTINUAL_{name.upper()}")) in environ:
            values[name] = parse(environ[env], env)
    result = ServiceConfig(**values)
    if result.models and (result.model_uri or result.registered_model or result.model_name):
        given = [key for key in ("model_uri", "registered_model", "model_name") if getattr(result, key)]
        raise ValueError(f"models names every served model: it cannot be combined with {', '.join(given)} "
                         "(set in the config or as CONTINUAL_<KEY>)")
    for name in ("max_batch_size", "max_texts", "max_text_chars", "max_body_bytes", "max_length"):
        if getattr(result, name) < 1:
            raise ValueError(f"{name} must be at least 1")
    for name in ("monitoring_window", "monitoring_min_texts"):
        if getattr(result, name) < 2:
            raise ValueError(f"{name} must be at least 2")
    if result.monitoring_min_texts > result.monitoring_window:
        raise ValueError(f"monitoring_min_texts ({result.monitoring_min_texts}) must not exceed monitoring_window "
                         f"({result.monitoring_window})")
    for name in ("monitoring_interval_s", "read_header_timeout_s", "read_body_timeout_s"):
        if not getattr(result, name) > 0:
            raise ValueError(f"{name} must be above 0")
    check_capture_settings(result.capture_rate, result.capture_max_rows, result.capture_dir, result.capture_max_bytes)
    if result.backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {result.backend!r}")
    return result
