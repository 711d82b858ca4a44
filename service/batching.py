"""Micro-batching: texts of concurrent requests share one forward pass.

Request threads put a job (model, texts, future) on a queue; one batcher thread takes the first job and every
job already queued behind it, and runs them together up to ``max_batch_size`` texts. It waits up to
``max_wait_s`` for more only while requests come concurrently (its last batch held more than one job): a lone
client never pays the wait, a loaded server still fills its batches. A job
names the model its request took, and a batch holds jobs of one model only, so a hot swap never
answers a request with a model it did not start on. Jobs of another model (a server of several models, or
a swap) met while gathering are set aside, in order, and start the next batches: interleaved traffic to two
models still makes full batches of each.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

from service.backends import Prediction, ServedModel

log = logging.getLogger(__name__)


@dataclass
class _Job:
    model: ServedModel
    texts: list[str]
    future: Future = field(default_factory=Future)


class MicroBatcher:
    def __init__(self, max_batch_size: int, max_wait_s: float, on_batch: Callable[[int], None] = lambda size: None):
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._concurrent = False  # the last batch held more than one job
        self._aside: deque[_Job] = deque()  # taken off the queue for a later batch (another model, or no room)
        self._thread = threading.Thread(target=self._run, name="micro-batcher", daemon=True)
        self._thread.start()

    def submit(self, model: ServedModel, texts: list[str]) -> Future:
        """A future of one Prediction per text."""
        job = _Job(model, texts)
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            first = self._aside.popleft() if self._aside else self._queue.get()
            if first is None:
                return
            batch, stop = self._gather(first)
            self._forward(batch)
            if stop:
                return

    def _gather(self, first: _Job) -> tuple[list[_Job], bool]:
        """Jobs for one forward pass (``first``'s model only) and whether to stop."""
        batch, size = [first], len(first.texts)
        for job in list(self._aside):  # set aside earlier: they waited longest
            if job.model is first.model and size + len(job.texts) <= self.max_batch_size:
                self._aside.remove(job)
                batch.append(job)
                size += len(job.texts)
        waited = bool(self._aside)  # jobs of another model wait behind this batch
        deadline = time.monotonic() + (self.max_wait_s if self._concurrent else 0.0)
        while size < self.max_batch_size:
            try:
                remaining = deadline - time.monotonic()
                job = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return batch, True
            if job.model is not first.model or size + len(job.texts) > self.max_batch_size:
                self._aside.append(job)
                waited = True  # a job was waiting behind this batch
                if job.model is first.model or time.monotonic() >= deadline:
                    break  # full; or past the wait: never keep sorting another model's queue while this one waits
                continue
            batch.append(job)
            size += len(job.texts)
        self._concurrent = len(batch) > 1 or waited
        return batch, False

    def _forward(self, batch: list[_Job]) -> None:
        # A request that gave up waiting cancelled its future; from here on it cannot cancel any more.
        batch = [job for job in batch if job.future.set_running_or_notify_cancel()]
        if not batch:
            return
        texts = [text for job in batch for text in job.texts]
        try:
            predictions = batch[0].model.predict(texts, self.max_batch_size)
        except Exception as error:  # the requests get the error; the batcher thread must live on
            log.exception("forward pass over %d texts failed", len(texts))
            for job in batch:
                job.future.set_exception(error)
            return
        for start in range(0, len(texts), self.max_batch_size):
            self._on_batch(min(self.max_batch_size, len(texts) - start))
        offset = 0
        for job in batch:
            job.future.set_result(predictions[offset:offset + len(job.texts)])
            offset += len(job.texts)


def predict_unbatched(model: ServedModel, texts: list[str], max_batch_size: int,
                      on_batch: Callable[[int], None]) -> list[Prediction]:
    """The same contract in the request's own thread, for batching turned off."""
    predictions = model.predict(texts, max_batch_size)
    for start in range(0, len(texts), max_batch_size):
        on_batch(min(max_batch_size, len(texts) - start))
    return predictions
