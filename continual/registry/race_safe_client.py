"""An MlflowClient whose tag writes survive a concurrent writer of the same tag.

MLflow's SQL stores write a tag with ``session.merge``: a SELECT, then an INSERT when the row is not there.
Two processes tagging the same object with the same key at once both INSERT, and one fails on the table's
primary key with an IntegrityError (seen in CI, stop 16, from two clones gating one store). A tag write is
"last writer wins" anyway, so the loser writes again: the row is there now and the merge UPDATEs it.

Aliases are not retried here: a lost alias race means the champion moved, which ``champion`` refuses."""
from __future__ import annotations

from typing import Any, Callable

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

RETRIES = 3


def lost_insert_race(error: MlflowException) -> bool:
    """The error is a primary-key clash from a concurrent INSERT (local store, or a server's message)."""
    cause = error.__cause__
    if cause is not None and type(cause).__name__ == "IntegrityError":
        return True
    text = str(error)
    return "IntegrityError" in text or "UniqueViolation" in text


def _retried(write: Callable[..., Any], *args: Any) -> Any:
    for attempt in range(RETRIES):
        try:
            return write(*args)
        except MlflowException as error:
            if attempt == RETRIES - 1 or not lost_insert_race(error):
                raise
    return None  # unreachable: the loop returns or raises


class RaceSafeClient(MlflowClient):
    def set_tag(self, run_id: str, key: str, value: Any, synchronous: bool | None = None) -> Any:
        return _retried(super().set_tag, run_id, key, value, synchronous)

    def set_model_version_tag(self, name: str, version: str | None = None, key: str | None = None,
                              value: Any = None, stage: str | None = None) -> None:
        _retried(super().set_model_version_tag, name, version, key, value, stage)

    def set_registered_model_tag(self, name: str, key: str, value: Any) -> None:
        _retried(super().set_registered_model_tag, name, key, value)
