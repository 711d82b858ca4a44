"""The two distributions declare what their code imports, at the versions requirements.lock pins.

continual (pyproject.toml) ships `continual` and `service`; continual-serve (deploy/continual-serve) ships
`service` alone, its torch backend behind the `torch` extra. Read from the source and the installed metadata.
"""
from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions, version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
TRAINING = REPO / "pyproject.toml"
SERVING = REPO / "deploy" / "continual-serve" / "pyproject.toml"
# The modules of `service` that need torch: the torch backend, the pooled classifier it loads, MLflow's pyfunc model.
TORCH_SIDE = {"service/backends/pytorch.py", "service/pooled.py", "service/pyfunc.py", "service/pyfunc_model.py"}
FIRST_PARTY = {"continual", "service", "__future__"}


def project(path: Path) -> dict:
    return tomllib.loads(path.read_text())["project"]


def names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(line).name) for line in requirements}


def third_party_imports(files: list[Path]) -> dict[str, set[str]]:
    """{top-level module: files importing it}, standard library and this repository's packages left out."""
    found: dict[str, set[str]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.partition(".")[0]
                if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def undeclared(files: list[Path], declared: set[str]) -> dict[str, set[str]]:
    """Imported modules that no declared distribution provides (any of the distributions that install one counts:
    mlflow's modules come with mlflow or mlflow-skinny)."""
    providers = packages_distributions()
    return {module: users for module, users in third_party_imports(files).items()
            if not {canonicalize_name(d) for d in providers.get(module, [module])} & declared}


def python_files(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (REPO / folder).rglob("*.py"))


def locked() -> dict[str, str]:
    lines = (REPO / "requirements.lock").read_text().splitlines()
    return {canonicalize_name(name): pin for name, _, pin in (line.partition("==") for line in lines if "==" in line)}


def test_the_training_distribution_declares_every_import_of_both_packages():
    declared = names(project(TRAINING)["dependencies"])
    assert undeclared(python_files("continual", "service"), declared) == {}


def test_the_serving_distribution_declares_every_import_of_the_server():
    serving = project(SERVING)
    base = names(serving["dependencies"])
    onnx_side = [path for path in python_files("service") if str(path.relative_to(REPO)) not in TORCH_SIDE]
    assert undeclared(onnx_side, base) == {}
    torch_side = [REPO / path for path in sorted(TORCH_SIDE)]
    assert undeclared(torch_side, base | names(serving["optional-dependencies"]["torch"])) == {}
    assert not base & {"torch", "torchvision", "transformers", "avalanche-lib", "mlflow"}


def test_both_distributions_admit_the_locked_versions_and_install_them_here():
    """What the lock pins satisfies every requirement of both, and this environment (built from the lock) has it."""
    pins = locked()
    training, serving = project(TRAINING), project(SERVING)
    assert training["version"] == serving["version"]
    requirements = [*training["dependencies"], *serving["dependencies"],
                    *(line for extra in serving["optional-dependencies"].values() for line in extra)]
    for line in requirements:
        requirement = Requirement(line)
        pin = pins.get(canonicalize_name(requirement.name))
        assert pin is not None, f"{requirement.name} is not in requirements.lock"
        assert requirement.specifier.contains(pin, prereleases=True), f"{line} refuses the locked {pin}"
        assert version(requirement.name).split("+")[0] == pin.split("+")[0], f"{requirement.name}: not the locked one"
