"""The installed version of the server: continual's or continual-serve's."""
from importlib.metadata import PackageNotFoundError, version


def _installed_version() -> str:
    """The version of whichever distribution installed this package: continual (training and serving) or
    continual-serve (the server alone)."""
    for distribution in ("continual", "continual-serve"):
        try:
            return version(distribution)
        except PackageNotFoundError:
            continue
    return "0+unknown"  # running from a source tree that was never installed


__version__ = _installed_version()
