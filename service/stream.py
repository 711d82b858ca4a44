"""One served model: its V2 name, the holder that follows its source, its drift monitor.

A server with one model (``model_uri`` / ``registered_model``) has one stream; ``models`` makes one stream per
entry. Each stream follows its own source (registry alias) on its own poll thread and swaps on its own, so a
load that fails in one leaves the others serving.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.backends import ServedModel
from service.config import ServiceConfig
from service.errors import ApiError
from service.metrics import ServiceMetrics
from service.model_holder import FIRST_MODEL_POLL_S, ModelHolder, ReloadFailed
from service.model_source import ModelCard, ModelSource, source_for
from service.monitoring.capture import CaptureWriter
from service.monitoring.monitor import Monitor, MonitorSettings

log = logging.getLogger(__name__)
DEFAULT_NAME = "classifier"


@dataclass
class Stream:
    name: str
    holder: ModelHolder
    monitor: Monitor

    def serving_model(self) -> ServedModel:
        """The model this request uses from start to end (read once: a swap may happen meanwhile)."""
        model = self.holder.current
        if model is None:
            why = f": {self.holder.public_error}" if self.holder.public_error else ""
            raise ApiError(503, f"model {self.name!r} is not loaded yet{why}", {"Retry-After": "5"})
        return model

    def index_entry(self) -> dict[str, Any]:
        """This model in the Triton / KServe model repository index."""
        model = self.holder.current
        if model is None:
            reason = self.holder.public_error or "not loaded yet"
        elif self.holder.stale:
            reason = f"serving the previous version: the new one failed to load: {self.holder.public_error}"
        else:
            reason = ""
        return {"name": self.name, "version": (model.card.version or "") if model else "",
                "state": "READY" if model is not None else "UNAVAILABLE", "reason": reason}

    def close(self) -> None:
        self.monitor.close()
        self.holder.close()


def build_streams(settings: ServiceConfig, metrics: ServiceMetrics) -> dict[str, Stream]:
    """One stream per configured model, in the configured order; nothing loaded yet."""
    capture_dir = Path(settings.capture_dir) if settings.capture_dir else None
    if not settings.models:  # one model: its name and capture folder as before there were several
        source = source_for(settings.source_uri, settings.tracking_uri, settings.registry_uri)
        name = settings.model_name or getattr(source, "name", None) or settings.registered_model or DEFAULT_NAME
        return {name: _stream(name, source, settings, metrics, capture_dir)}
    return {name: _stream(name, _DeferredSource(uri, settings.tracking_uri, settings.registry_uri), settings, metrics,
                          capture_dir / name if capture_dir else None)
            for name, uri in settings.models}


def load_first_models(streams: dict[str, Stream], poll_seconds: float) -> None:
    """Load every stream's model. A failure leaves that stream unavailable (its poll retries; one whose model is not
    in the registry yet is looked for even without a poll); only when no model loaded and nothing would retry does
    the server refuse to start."""
    failures: list[ReloadFailed] = []
    for stream in streams.values():
        try:
            stream.holder.refresh()
        except ReloadFailed as error:
            failures.append(error)
            log.warning("model %s is unavailable: %s", stream.name, error)
    if not failures:
        return
    waiting = [failure for failure in failures if failure.not_registered]  # their holders look again
    if len(failures) == len(streams) and poll_seconds <= 0 and not waiting:
        raise failures[0]  # nothing would ever retry: fail at start rather than run never ready
    if poll_seconds > 0:
        retry = f"the registry poll retries every {poll_seconds} s"
    elif waiting:
        retry = (f"a model not in the registry yet is looked for every {FIRST_MODEL_POLL_S:g} s, "
                 "POST /admin/reload?model=NAME retries any other")
    else:
        retry = "POST /admin/reload?model=NAME retries"
    log.warning("starting without %d of %d models; %s", len(failures), len(streams), retry)


def _stream(name: str, source: ModelSource, settings: ServiceConfig, metrics: ServiceMetrics,
            capture_dir: Path | None) -> Stream:
    holder = ModelHolder(source, settings.max_length, metrics, settings.backend, settings.max_quantized_drop,
                         settings.compute_threads, name=name)
    capture = None
    if settings.monitoring and settings.capture_rate > 0 and capture_dir is not None:
        capture = CaptureWriter(capture_dir, settings.capture_max_rows, metrics.captured.inc,
                                lambda reason, n=1: metrics.capture_dropped.labels(reason).inc(n),
                                max_bytes=settings.capture_max_bytes)
    monitor_settings = MonitorSettings(settings.monitoring, settings.monitoring_window, settings.monitoring_interval_s,
                                       settings.monitoring_min_texts, settings.drift_thresholds, settings.capture_rate)
    monitor = Monitor(monitor_settings, metrics, lambda: holder.current, name, capture)
    return Stream(name, holder, monitor)


class _DeferredSource:
    """A source whose URI is checked at each resolve, not at start: with several models, a folder that is missing
    (or not yet there) makes its own stream unavailable instead of stopping the server."""

    def __init__(self, uri: str, tracking_uri: str | None, registry_uri: str | None):
        self.uri = uri
        self._args = (uri, tracking_uri, registry_uri)
        self._source: ModelSource | None = None

    def _resolved(self) -> ModelSource:
        if self._source is None:
            self._source = source_for(*self._args)
        return self._source

    def resolve(self) -> ModelCard:
        return self._resolved().resolve()

    def fetch(self, card: ModelCard, into: Path) -> Path:
        return self._resolved().fetch(card, into)
