"""Prometheus metrics of one app, and their exposition (single process or gunicorn multiprocess).

Each app gets its own registry so that tests can build many apps in one process. Under gunicorn with
several workers, set PROMETHEUS_MULTIPROC_DIR (an empty folder) before start: prometheus_client then
writes every worker's values to files there and /metrics merges them, whichever worker answers.
"""
from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

from service.model_source import ModelCard

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def multiprocess_mode() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir"))


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter("continual_http_requests", "HTTP requests answered, by route and status",
                                ["method", "route", "status"], registry=registry)
        self.latency = Histogram("continual_http_request_duration_seconds", "Time to answer a request, by route",
                                 ["method", "route"], registry=registry)
        self.errors = Counter("continual_http_errors", "Responses with status >= 400, by route and status",
                              ["route", "status"], registry=registry)
        self.batch_size = Histogram("continual_batch_size", "Texts in one forward pass",
                                    buckets=BATCH_BUCKETS, registry=registry)
        self.texts = Counter("continual_texts_classified", "Texts classified", registry=registry)
        # liveall: one series per live worker, so a worker still on the old model shows up as such.
        self.model_version = Gauge("continual_model_version", "Registry version of the served model (-1: none)",
                                   registry=registry, multiprocess_mode="liveall")
        self.model_info = Gauge("continual_model_info", "1 for the served model, 0 for models served before",
                                ["name", "version", "round", "round_key"], registry=registry,
                                multiprocess_mode="liveall")
        self.backend = Gauge("continual_model_backend", "1 for the backend serving now (torch, onnx, onnx-int8)",
                             ["backend"], registry=registry, multiprocess_mode="liveall")
        self.reloads = Counter("continual_model_reloads", "Models loaded and swapped in", registry=registry)
        self.reload_failures = Counter("continual_model_reload_failures",
                                       "Model loads or registry lookups that failed (the old model kept serving)",
                                       registry=registry)
        self.model_version.set(-1)

    def model_swapped(self, new: ModelCard, old: ModelCard | None) -> None:
        if old is not None:
            self.model_info.labels(*_info_labels(old)).set(0)
        self.model_info.labels(*_info_labels(new)).set(1)
        self.model_version.set(float(new.version) if new.version and new.version.isdigit() else -1)
        self.reloads.inc()

    def backend_swapped(self, new: str, old: str | None) -> None:
        if old is not None and old != new:
            self.backend.labels(old).set(0)
        self.backend.labels(new).set(1)

    def exposition(self) -> tuple[bytes, str]:
        if multiprocess_mode():
            merged = CollectorRegistry()
            multiprocess.MultiProcessCollector(merged)
            return generate_latest(merged), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _info_labels(card: ModelCard) -> tuple[str, str, str, str]:
    return card.name or "", card.version or "", card.round or "", card.round_key or ""
