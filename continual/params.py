"""The one config loader: params.yaml of a workspace, over the shipped defaults."""
from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml


def default_params_text() -> str:
    return resources.files("continual").joinpath("template/params.yaml").read_text()


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (over or {}).items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_params(path: str | Path | None = None) -> dict[str, Any]:
    """Shipped defaults, overridden by the workspace's params.yaml (a missing key keeps its default)."""
    params = yaml.safe_load(default_params_text())
    if path is not None and Path(path).exists():
        params = _merge(params, yaml.safe_load(Path(path).read_text()) or {})
    return params
