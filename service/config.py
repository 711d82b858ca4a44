"""The server's settings: ``ServiceConfig``, filled from a dict, then the environment, then defaults.

The sections of params.yaml that configure the server (``serving``, ``monitoring``) are dataclasses here, with
their defaults and bounds: ``ServiceConfig`` takes its defaults from them, and continual's params schema
(continual/params/) uses them as its own sections, so each default and each bound is written once. Bounds are
field metadata read by ``out_of_bounds``: ``at_least``/``at_most`` (inclusive), ``above``/``below`` (exclusive).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from service.backends import BACKENDS
from service.model_map import parse_models
from service.monitoring.capture import DEFAULT_MAX_BYTES, check_capture_settings

# Keys whose environment variable is not simply CONTINUAL_<KEY>: MLflow's own names win, so the
# server finds the same tracking server as every other MLflow tool in the shell.
ENV_NAMES = {
    "tracking_uri": "MLFLOW_TRACKING_URI",
    "registry_uri": "MLFLOW_REGISTRY_URI",
}
# A bound's test and its words in a refusal ("must be at least 2").
BOUNDS = {"at_least": (lambda v, b: v >= b, "at least"), "above": (lambda v, b: v > b, "above"),
          "at_most": (lambda v, b: v <= b, "at most"), "below": (lambda v, b: v < b, "below")}


def bounded(default: Any, **bounds: float) -> Any:
    """A dataclass field with a default and bounds (at_least, above, at_most, below)."""
    return field(default=default, metadata=bounds)


def out_of_bounds(value: float, metadata: Mapping[str, Any]) -> str | None:
    """What is wrong with ``value`` under a field's bounds ("must be at least 2"), or None."""
    if isinstance(value, float) and math.isnan(value) and any(k in metadata for k in BOUNDS):
        return "must be a number"
    for name, (holds, words) in BOUNDS.items():
        if name in metadata and not holds(value, metadata[name]):
            return f"must be {words} {metadata[name]}"
    return None


@dataclass(frozen=True)
class ServingSettings:
    """params.yaml's ``serving``: what the gate and the server's slow-client deadlines use."""
    max_quantized_drop: float = 0.01      # int8 served only within this of fp32 accuracy (negative: never)
    read_header_timeout_s: float = bounded(10.0, above=0)  # a request's headers, from their first byte
    read_body_timeout_s: float = bounded(30.0, above=0)    # its body, from the end of the headers


@dataclass(frozen=True)
class DriftThresholds:
    """params.yaml's ``monitoring.thresholds``: a check above its threshold is drift."""
    embedding_auc: float = 0.55
    label_psi: float = 0.2
    length_psi: float = 0.2
    confidence_drop: float = 0.1


@dataclass(frozen=True)
class CaptureSettings:
    """params.yaml's ``monitoring.capture`` (the bounds are check_capture_settings')."""
    rate: float = bounded(0.0, at_least=0, at_most=1)     # share of served texts captured; 0 = off
    max_rows: int = bounded(10_000, at_least=1)          # rows per capture file (one older file kept)
    max_bytes: int = bounded(DEFAULT_MAX_BYTES, at_least=1024)  # bytes per capture file
    anonymous: bool = False                                # False: only requests with the admin token
    dir: str = "captures"                                  # relative to the workspace


@dataclass(frozen=True)
class MonitoringSettings:
    """params.yaml's ``monitoring``: the window of live traffic and its drift checks (service.monitoring)."""
    enabled: bool = True
    window: int = bounded(500, at_least=2)             # texts in the sliding window, per worker
    interval_s: float = bounded(30.0, above=0)         # seconds between drift checks
    min_texts: int = bounded(100, at_least=2)          # no scores until the window holds this many
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)
    capture: CaptureSettings = field(default_factory=CaptureSettings)

    def __post_init__(self) -> None:
        if self.min_texts > self.window:
            raise ValueError(f"min_texts ({self.min_texts}) must not exceed window ({self.window})")


def like(section: type, name: str) -> Any:
    """A ServiceConfig field with the default and the bounds of ``section``'s field ``name``."""
    spec = section.__dataclass_fields__[name]
    return field(default=spec.default, metadata=spec.metadata)


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
    read_header_timeout_s: float = like(ServingSettings, "read_header_timeout_s")
    read_body_timeout_s: float = like(ServingSettings, "read_body_timeout_s")
    backend: str = "auto"                 # auto | onnx-int8 | onnx | torch (service.backends)
    # auto on a folder no gate judged: int8 only within this of fp32
    max_quantized_drop: float = ServingSettings.max_quantized_drop
    compute_threads: int = 0              # intra-op threads per worker; 0 = the cores this process may use,
                                          # divided by $CONTINUAL_SERVE_WORKERS (service.gunicorn_conf)
    # Monitoring (service.monitoring); `continual serve` fills these from params.yaml's monitoring section, and
    # the defaults are that section's (MonitoringSettings above), and so are the bounds load_config checks
    # (``like``; capture's are check_capture_settings').
    monitoring: bool = MonitoringSettings.enabled  # window of recent traffic, drift checks, prediction counters
    monitoring_window: int = like(MonitoringSettings, "window")
    monitoring_interval_s: float = like(MonitoringSettings, "interval_s")  # a background thread
    monitoring_min_texts: int = like(MonitoringSettings, "min_texts")
    drift_embedding_auc: float = DriftThresholds.embedding_auc
    drift_label_psi: float = DriftThresholds.label_psi
    drift_length_psi: float = DriftThresholds.length_psi
    drift_confidence_drop: float = DriftThresholds.confidence_drop
    capture_rate: float = CaptureSettings.rate  # share of served texts sampled into capture_dir (opt-in)
    capture_max_rows: int = CaptureSettings.max_rows
    capture_max_bytes: int = CaptureSettings.max_bytes  # the folder holds at most twice this
    capture_anonymous: bool = CaptureSettings.anonymous
    capture_dir: str | None = None        # an absolute folder here (params.yaml's dir is relative to the workspace)

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
    known = {spec.name: spec for spec in fields(ServiceConfig)}
    unknown = sorted(set(config) - set(known))
    if unknown:
        raise ValueError(f"unknown service config keys: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, spec in known.items():
        kind = type(spec.default) if spec.default is not None else str
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
    for spec in known.values():  # the bounds ServiceConfig's fields take from the sections (``like``)
        problem = out_of_bounds(getattr(result, spec.name), spec.metadata)
        if problem:
            raise ValueError(f"{spec.name} {problem}, not {getattr(result, spec.name)!r}")
    if result.monitoring_min_texts > result.monitoring_window:
        raise ValueError(f"monitoring_min_texts ({result.monitoring_min_texts}) must not exceed monitoring_window "
                         f"({result.monitoring_window})")
    check_capture_settings(result.capture_rate, result.capture_max_rows, result.capture_dir, result.capture_max_bytes)
    if result.backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {result.backend!r}")
    return result
