"""params.yaml: the one config loader and its typed schema (layer 0: imports only service.config).

``load_params`` reads a workspace's params.yaml once and checks it against the schema (schema.py) before
any command does work: an unknown key is refused with the nearest known key suggested, a wrong type or an
out-of-range value with the dotted key named (ParamsError, a ValueError carrying the file name). It returns
a plain dict, normalised and with every default filled in; ``read_params`` returns the typed ``Params``.

The schema is stdlib dataclasses, not pydantic: the server's lean install (deploy/continual-serve) does not
declare pydantic and its sections (service.config) live in that install; service.config's ``ServiceConfig``
is a frozen dataclass already; and the messages this module gives (the dotted key, a suggestion from difflib,
the file) are its own either way, so a validation library would add a dependency and no checks.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from continual.params.schema import Params
from continual.params.typed import ParamsError

__all__ = ["Params", "ParamsError", "default_params_text", "load_params", "read_params"]


def default_params_text() -> str:
    """The shipped params.yaml (what `continual init` writes): the schema's defaults, with their documentation."""
    return resources.files("continual").joinpath("template/params.yaml").read_text()


def read_params(path: str | Path | None = None) -> Params:
    """The workspace's params.yaml over the schema's defaults, checked; a missing file: the defaults."""
    if path is None or not Path(path).exists():
        return Params()
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as error:
        raise ParamsError(path, "", f"not valid YAML: {error}") from None
    return Params.from_dict(data, str(path))


def load_params(path: str | Path | None = None) -> dict[str, Any]:
    """``read_params`` as a plain dict keyed as in params.yaml."""
    return read_params(path).to_dict()
