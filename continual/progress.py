"""Progress of the long steps on stderr, so that a log never goes quiet for long: a tqdm bar for each pass over
the data (reading an arrival, a round's embedding, training, evaluation, EWC's importance pass, the int8 check),
and a bar of elapsed seconds for a step with nothing to count (``ticking``: imports, the ONNX export, MLflow's
upload of a model), each named after its step.

A bar shows only once its step has run ``interval_s`` (params.yaml's ``progress.interval_s``), so small arrivals
print nothing new, and is redrawn at most that often. Not on a terminal (`dvc repro` into a log, CI) every redraw
is one more line ending in a carriage return: a long step writes a line every few seconds, never one per batch,
and never none for minutes.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm

from continual.params.schema import ProgressParams

INTERVAL_S = float(ProgressParams().interval_s)  # where a command did not read params.yaml: the shipped value
_interval_s = INTERVAL_S


def configure(params: dict) -> None:
    """Take ``progress.interval_s`` from a command's params, for every bar the process draws after."""
    global _interval_s
    value = (params.get("progress") or {}).get("interval_s", INTERVAL_S)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"params: progress.interval_s must be a positive number of seconds, not {value!r}")
    _interval_s = float(value)


def interval_s() -> float:
    return _interval_s


def bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str, unit: str = "row",
        disable: bool = False) -> tqdm:
    """A tqdm bar on stderr that appears once the pass has run ``interval_s`` and refreshes at most that often."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True,
                mininterval=_interval_s, delay=_interval_s, disable=disable)


@contextmanager
def ticking(desc: str) -> Iterator[tqdm]:
    """A bar of the seconds a step with nothing to count has run, redrawn every ``interval_s`` by a thread while
    the step runs (it shows, like every bar, once the step has taken ``interval_s``)."""
    stop = threading.Event()
    with tqdm(desc=desc, bar_format="{desc}: {elapsed}", dynamic_ncols=True, mininterval=_interval_s,
              delay=_interval_s) as shown:
        def tick() -> None:
            while not stop.wait(_interval_s):
                shown.update(1)

        thread = threading.Thread(target=tick, name=f"progress: {desc}", daemon=True)
        thread.start()
        try:
            yield shown
        finally:
            stop.set()
            thread.join()
