"""The served model, owned by the app, swapped for a new one without stopping the service.

A new model is loaded beside the old one and then the reference is replaced in one assignment.
Requests read ``holder.current`` once and keep that object, so a request in flight finishes on the
model it started with while new requests already get the new one.
"""
from __future__ import annotations

import logging
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from service import backends
from service.backends import ServedModel
from service.backends.loading import load as load_backend
from service.metrics import ServiceMetrics
from service.model_source import ModelCard, ModelNotRegistered, ModelSource, hf_folders
from service.monitoring.reference import Reference
from service.redaction import redact

log = logging.getLogger(__name__)


# With no model yet and no poll configured (poll_seconds 0), how often to look for the first one.
FIRST_MODEL_POLL_S = 5.0


class ReloadFailed(RuntimeError):
    """The new model could not be resolved or loaded; the old one (if any) keeps serving. ``not_registered``: the
    registry holds no model at the source's URI yet (model_source.ModelNotRegistered)."""

    def __init__(self, message: str, not_registered: bool = False):
        super().__init__(message)
        self.not_registered = not_registered


@dataclass(frozen=True)
class ReloadOutcome:
    swapped: bool
    previous: ModelCard | None
    current: ModelCard | None


class ModelHolder:
    def __init__(self, source: ModelSource, max_length: int, metrics: ServiceMetrics, backend: str = "auto",
                 max_quantized_drop: float = 0.01, threads: int = 0, name: str = "classifier"):
        self.name = name                              # the V2 model name: the model_name label of its series
        self.source = source
        self.max_length = max_length
        self.backend = backend                        # requested: auto | onnx-int8 | onnx | torch
        self.max_quantized_drop = max_quantized_drop  # auto, for a folder no gate has judged
        self.threads = threads                        # intra-op threads of the backend, per process
        self.metrics = metrics
        self.last_error: str | None = None           # the last load's failure in full (credentials removed): /admin
        self.public_error: str | None = None         # the same for anyone: no paths, hosts, SQL or tracebacks
        self.error_id: str | None = None             # names the failure in the log, in /admin and in public_error
        self.failed_at: float | None = None          # Unix time of the last failure
        self.awaiting_registration = False           # the last look found no model at the source's URI
        self.stale = False  # the source points at a model that failed to load (the old one, if any, serves)
        self._current: ServedModel | None = None
        self._reload_lock = threading.Lock()       # one load at a time: poll thread vs admin reload
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        metrics.add_model(name)

    @property
    def current(self) -> ServedModel | None:
        return self._current

    def refresh(self, force: bool = False) -> ReloadOutcome:
        """Swap in the model the source points at now, if it is not the one served (always if ``force``)."""
        with self._reload_lock:
            previous = self._current
            previous_card = previous.card if previous else None
            card = None
            try:
                card = self.source.resolve()
                unchanged = previous_card is not None and card.fingerprint == previous_card.fingerprint
                if unchanged and not force:
                    self._set_stale(False)  # e.g. a rollback to the version still served
                    return ReloadOutcome(False, previous_card, previous_card)
                loaded = self._load(card)
            except ModelNotRegistered as error:  # not a fault: nothing to serve yet (a round registers it)
                if self.last_error != str(error):
                    log.warning("model %s: %s; looking again later", self.name, error)
                self.last_error = self.public_error = str(error)
                self.error_id = self.failed_at = None
                self.awaiting_registration = True
                raise ReloadFailed(self.last_error, not_registered=True) from error
            except Exception as error:  # any failure of a load must leave the old model serving
                self.awaiting_registration = False
                self.error_id, self.failed_at = f"load-{uuid.uuid4().hex[:12]}", time.time()
                self.last_error = redact(f"{type(error).__name__}: {error} ({self.error_id})")
                # Exception texts carry paths, hosts, SQL or a database's own words: the log and /admin have them,
                # anyone else the id that finds them there.
                self.public_error = (f"model {self.name!r} failed to load; the server's log has the detail "
                                     f"({self.error_id})")
                self.metrics.reload_failures.labels(self.name).inc()
                if card is not None:  # the alias moved (or nothing is served) and this server is behind it
                    self._set_stale(True)
                log.exception("loading model %s from %s failed; still serving %s (%s)", self.name,
                              redact(self.source.uri), previous_card.version if previous_card else "nothing",
                              self.error_id)
                raise ReloadFailed(self.last_error) from error
            self._current = loaded  # the swap: one reference assignment, atomic under the GIL
            self.last_error = self.public_error = self.error_id = self.failed_at = None
            self.awaiting_registration = False
            self._set_stale(False)
            self.metrics.model_swapped(self.name, loaded.card, previous_card)
            self.metrics.backend_swapped(self.name, loaded.backend.name, previous.backend.name if previous else None)
            log.info("model %s: serving %s (version %s, round %s) on %s: %s", self.name, card.location, card.version,
                     card.round_key, loaded.backend.name, loaded.backend.reason)
            return ReloadOutcome(True, previous_card, loaded.card)

    def _set_stale(self, stale: bool) -> None:
        self.stale = stale
        self.metrics.model_stale.labels(self.name).set(1 if stale else 0)

    def _load(self, card: ModelCard) -> ServedModel:
        with tempfile.TemporaryDirectory(prefix="continual-serve-") as download:
            model_dir, tokenizer_dir = hf_folders(self.source.fetch(card, Path(download)))
            pooled = (model_dir / "classifier.json").is_file()  # a round's folder (it may hold ONNX graphs)
            choice = backends.choose(self.backend, model_dir if pooled else None, card, self.max_quantized_drop)
            loaded = load_backend(choice, model_dir, tokenizer_dir, card, self.max_length, self.threads)
            loaded.reference = _reference(model_dir if pooled else None)
        # One forward before the swap: a model that cannot run fails here, not on a user's request,
        # and the first real request does not pay for lazy initialisation.
        loaded.predict(["warm up"], batch_size=1)
        return loaded

    def start_polling(self, every_s: float) -> None:
        """Look for a moved alias every ``every_s``. With 0, only while the registry has no model for the source
        yet (then until the first one is loaded): a model that fails to load is retried by /admin/reload only."""
        until_loaded = every_s <= 0
        if self._poller is not None or (until_loaded and not self.awaiting_registration):
            return
        self._poller = threading.Thread(target=self._poll, args=(every_s if every_s > 0 else FIRST_MODEL_POLL_S,
                                                                 until_loaded),
                                        name=f"model-poll-{self.name}", daemon=True)
        self._poller.start()

    def _poll(self, every_s: float, until_loaded: bool) -> None:
        while not self._stop.wait(every_s):
            try:
                self.refresh()
            except ReloadFailed:
                pass  # logged and counted by refresh; the next poll tries again (a transient fault heals)
            if until_loaded and not self.awaiting_registration:
                return  # loaded, or failing for another reason

    def close(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)


def _reference(model_dir: Path | None) -> Reference | None:
    """The drift monitor's reference stored with the model; a damaged one costs the checks, not the model."""
    try:
        return Reference.load(model_dir) if model_dir is not None else None
    except Exception:
        log.exception("the reference in %s cannot be read: drift checks need it and stay empty", model_dir)
        return None
