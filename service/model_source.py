"""Where the served model comes from: a local folder or the MLflow registry, and what it is called.

The one place in the service that knows the on-disk layouts it accepts:
  - a Hugging Face folder (config.json, weights, tokenizer files);
  - a training round folder (model/ + round.json {"key", "index", "data_hash"});
  - an MLflow pyfunc model as continual registers it (MLmodel, artifacts/classifier/: a pooled classifier
    folder, see ``service.pyfunc``);
  - an MLflow transformers model (MLmodel, model/, components/tokenizer/), as
    ``mlflow.transformers.log_model({"model": m, "tokenizer": t}, ...)`` writes it.
"""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Protocol
from urllib.parse import urlsplit

import yaml

from service.redaction import public_uri, redact
from service.registry_tags import ARRIVAL_TAG, DATA_HASH_TAG, INT8_GATE_TAG, ROUND_KEY_TAG, ROUND_TAG

# models:/NAME@ALIAS or models:/NAME/VERSION; anything else under models:/ (a logged-model id) is
# downloaded as plain artifacts without registry metadata.
REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")
ROUND_KEY = re.compile(r"^\d+-(?P<arrival>.+)$")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelCard:
    """Who answered a request: the registry version, the round and the data it was trained on."""

    # What anyone may read: the registry URI the server follows (models:/NAME@alias, models:/NAME/3, runs:/...), None
    # for a local folder or a URI that names a host or a file (service.redaction.public_uri).
    source: str | None
    fingerprint: str                 # changes exactly when the source points at another model
    name: str | None = None          # registered model name
    version: str | None = None       # registry version
    round: str | None = None
    round_key: str | None = None
    arrival: str | None = None
    data_hash: str | None = None
    int8_gate: str | None = None     # the promotion gate's int8 check ("passed: ..." / "failed: ..."), if it ran
    location: str | None = None      # where it was loaded from (a folder, a URI without credentials): log, admin

    def as_json(self, private: bool = False) -> dict[str, Any]:
        """The card for an answer; ``private`` (the admin API) adds ``location``."""
        hidden = {"fingerprint"} if private else {"fingerprint", "location"}
        return {key: value for key, value in asdict(self).items() if key not in hidden}


class ModelSource(Protocol):
    uri: str

    def resolve(self) -> ModelCard:
        """Which model the source points at now; cheap, called on every poll."""

    def fetch(self, card: ModelCard, into: Path) -> Path:
        """The folder holding the model ``card`` names (may download into ``into``)."""


@dataclass(frozen=True)
class LocalFolderSource:
    uri: str

    def resolve(self) -> ModelCard:
        root = Path(self.uri)
        model_dir, _ = hf_folders(root)
        weights = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
        stamp = max((path.stat().st_mtime_ns for path in weights), default=0)
        round_info = _read_round_json(root / "round.json")
        key = round_info.get("key")
        return ModelCard(
            source=None, location=str(root), fingerprint=f"{key}:{stamp}",
            round=_str_or_none(round_info.get("index")), round_key=key,
            arrival=_arrival_of(key), data_hash=round_info.get("data_hash"),
        )

    def fetch(self, card: ModelCard, into: Path) -> Path:
        return Path(self.uri)


class ModelNotRegistered(LookupError):
    """The registry answers, but holds no model at the URI yet (no round registered it, or the alias is not set):
    the server waits for one instead of failing."""


@dataclass(frozen=True)
class RegistrySource:
    """A registered model by alias (follows the alias when it moves) or by fixed version."""

    uri: str
    name: str
    alias: str | None
    version: str | None
    tracking_uri: str | None = None
    registry_uri: str | None = None

    def _client(self):
        from mlflow import MlflowClient  # ~1.3 s: only paid when the registry is used

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)

    def resolve(self) -> ModelCard:
        from mlflow.exceptions import MlflowException

        client = self._client()
        try:
            if self.alias:
                found = client.get_model_version_by_alias(self.name, self.alias)
            else:
                found = client.get_model_version(self.name, self.version)
        except MlflowException as error:
            if self._absent(client, error):
                raise ModelNotRegistered(f"no model yet: the registry has nothing at {self.uri}") from error
            raise
        tags = found.tags or {}
        round_key = tags.get(ROUND_KEY_TAG)
        return ModelCard(
            source=self.uri, location=self.uri, fingerprint=f"{self.name}/{found.version}", name=self.name,
            version=str(found.version), round=tags.get(ROUND_TAG), round_key=round_key,
            arrival=tags.get(ARRIVAL_TAG) or _arrival_of(round_key), data_hash=tags.get(DATA_HASH_TAG),
            int8_gate=tags.get(INT8_GATE_TAG),
        )

    def _absent(self, client, error) -> bool:
        """MLflow says RESOURCE_DOES_NOT_EXIST for a missing model or version, INVALID_PARAMETER_VALUE for a
        missing alias (as for a malformed one): that case is told apart by asking for the model's aliases."""
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return True
        if not self.alias or error.error_code != "INVALID_PARAMETER_VALUE":
            return False
        try:
            return self.alias not in client.get_registered_model(self.name).aliases
        except Exception:
            return False

    def fetch(self, card: ModelCard, into: Path) -> Path:
        download_uri = self._client().get_model_version_download_uri(self.name, card.version)
        return _download(download_uri, into, self.tracking_uri, self.registry_uri)


@dataclass(frozen=True)
class ArtifactSource:
    """Any other MLflow URI (runs:/..., models:/<model id>, s3://...): fixed, no registry metadata."""

    uri: str
    tracking_uri: str | None = None
    registry_uri: str | None = None

    def resolve(self) -> ModelCard:
        return ModelCard(source=public_uri(self.uri), location=redact(self.uri), fingerprint=self.uri)

    def fetch(self, card: ModelCard, into: Path) -> Path:
        return _download(self.uri, into, self.tracking_uri, self.registry_uri)


def source_for(uri: str, tracking_uri: str | None = None, registry_uri: str | None = None) -> ModelSource:
    if match := REGISTRY_URI.match(uri):
        return RegistrySource(uri, match["name"], match["alias"], match["version"], tracking_uri, registry_uri)
    if Path(uri).is_dir():
        return LocalFolderSource(uri)
    if ":" in uri:
        return ArtifactSource(uri, tracking_uri, registry_uri)
    raise FileNotFoundError(f"model source {uri!r} is neither a folder nor an MLflow URI")


def create_sqlite_stores(uris: Iterable[str], tracking_uri: str | None, registry_uri: str | None) -> None:
    """Create a SQLite tracking database that does not exist yet, once, before the server's workers start.

    MLflow creates its tables on a store's first use. Two workers doing it at once on a new file break each other
    (alembic: "Online migration expected to match one row ... 0 found", or "table ... already exists"). The
    master does it here, in a child process: an MLflow store opened in the master would leave SQLite connections
    that every forked worker shares. Only when a served URI needs MLflow (not a local folder)."""
    if all(Path(uri).is_dir() for uri in uris):
        return
    for uri in dict.fromkeys(u for u in (tracking_uri, registry_uri) if u):
        database = sqlite_database(uri)
        if database is None or database.is_file() and database.stat().st_size > 0:
            continue
        log.info("creating the MLflow database %s before the workers start", database)
        created = subprocess.run(
            [sys.executable, "-c", "import sys; from mlflow import MlflowClient; "
             "MlflowClient(tracking_uri=sys.argv[1], registry_uri=sys.argv[1]).search_registered_models(max_results=1)",
             uri], capture_output=True, text=True, timeout=300)
        if created.returncode != 0:  # the workers meet the same fault and report it
            log.warning("could not create the MLflow database %s: %s", database, created.stderr.strip()[-2000:])


def sqlite_database(uri: str) -> Path | None:
    """The file a SQLite URL names, None for any other store (or an in-memory database). Parsed as SQLAlchemy
    parses it, since that is who opens it: the path is percent-decoded, so a '%', '?' or '#' in a folder name
    arrives quoted (``sqlite:///a%25b%3F/mlflow.db`` is the file ``a%b?/mlflow.db``)."""
    if urlsplit(uri).scheme.partition("+")[0].lower() != "sqlite":
        return None
    from sqlalchemy.engine import make_url

    database = make_url(uri).database
    return Path(database) if database and database != ":memory:" else None


def hf_folders(root: Path) -> tuple[Path, Path]:
    """(model folder, tokenizer folder) inside any of the accepted layouts."""
    if (root / "MLmodel").exists():
        flavors = yaml.safe_load((root / "MLmodel").read_text()).get("flavors") or {}
        pyfunc_artifacts = ((flavors.get("python_function") or {}).get("artifacts") or {})
        if "transformers" not in flavors and "classifier" in pyfunc_artifacts:
            folder = root / pyfunc_artifacts["classifier"]["path"]
            return folder, folder
        flavor = flavors.get("transformers") or {}
        model_dir = root / flavor.get("model_binary", "model")
        tokenizer_dir = root / "components" / "tokenizer"
        return model_dir, tokenizer_dir if tokenizer_dir.is_dir() else model_dir
    for candidate in (root, root / "model"):
        if (candidate / "config.json").exists():
            return candidate, candidate
    for candidate in (root, root / "model"):
        if (candidate / "adapter_config.json").exists():  # model.adapter: lora
            raise FileNotFoundError(
                f"{candidate} is a LoRA round's folder: adapters and a head, no encoder weights. Serve its registered "
                f"model version (models:/NAME/VERSION or @champion: adapters merged), or write a servable folder "
                f"with `continual merge ROUND OUT`")
    raise FileNotFoundError(f"{root} holds no Hugging Face model (config.json), round folder or MLflow model")


def _download(uri: str, into: Path, tracking_uri: str | None, registry_uri: str | None) -> Path:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no tqdm bars in server logs
    import mlflow.artifacts

    return Path(mlflow.artifacts.download_artifacts(
        artifact_uri=uri, dst_path=str(into), tracking_uri=tracking_uri, registry_uri=registry_uri,
    ))


def _read_round_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _arrival_of(round_key: str | None) -> str | None:
    match = ROUND_KEY.match(round_key or "")
    return match["arrival"] if match else None


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
