"""Several models in one server: the ``models`` config key, a mapping of V2 model name -> model URI.

Given as a dict to ``create_app``, as JSON in ``CONTINUAL_MODELS`` (or ``--set models=...``), or as repeated
``--model NAME=URI`` on ``service.serve``. Each name becomes ``/v2/models/{name}``, so it must be safe in a URL path
and in a Prometheus label: 1-64 ASCII letters, digits, ``.``, ``_`` or ``-``, starting with a letter or digit.
"""
from __future__ import annotations

import json
import re
from typing import Any, Mapping

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
EXAMPLE = '{"sentiment": "models:/sentiment@champion", "topics": "rounds/0003-news"}'


def check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValueError(f"{where}: model name {name!r} must be 1-64 ASCII letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    return name


def parse_models(value: Any, key: str = "models") -> tuple[tuple[str, str], ...]:
    """(name, uri) pairs in the given order, from a mapping or its JSON text; () for an empty value."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError(f"{key}: not JSON; give an object of model name -> model URI, e.g. {EXAMPLE}") from None
    if isinstance(value, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in value):
        value = dict(value)  # the parsed form itself: a config dict may be passed back in
    if not isinstance(value, Mapping):
        raise ValueError(f"{key}: must map model names to model URIs, e.g. {EXAMPLE}")
    pairs = []
    for name, uri in value.items():
        check_name(name, key)
        if not isinstance(uri, str) or not uri.strip():
            raise ValueError(f"{key}: model {name!r} needs a model URI (models:/NAME@alias, a folder, ...), "
                             f"got {uri!r}")
        pairs.append((name, uri.strip()))
    return tuple(pairs)


def parse_model_args(items: list[str]) -> dict[str, str]:
    """``--model NAME=URI`` (repeatable) as the ``models`` mapping; a bad or repeated item is a ValueError."""
    models: dict[str, str] = {}
    for item in items:
        name, sep, uri = item.partition("=")
        name = name.strip()
        if not sep or not name or not uri.strip():
            raise ValueError(f"--model wants NAME=URI (e.g. --model sentiment=models:/sentiment@champion), "
                             f"got {item!r}")
        check_name(name, "--model")
        if name in models:
            raise ValueError(f"--model: the name {name!r} is given twice")
        models[name] = uri.strip()
    return models
