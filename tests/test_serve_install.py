"""The server's own install: the continual-serve wheel in a fresh virtual environment, no torch, serving a registered
int8 champion, installed and started by the Dockerfile's own commands.

No container runs here: the Dockerfile's install script runs into a folder that stands for the image's root, and its
ENV, ENTRYPOINT and HEALTHCHECK run against it with the container paths moved under that folder. The same server
then starts from the training environment, and the two are compared: size on disk and cold start from the registry.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from serving import MODEL_NAME, free_port, make_registry, register_tiny_model, stop_server, wait_ready
from service.registry_tags import INT8_GATE_TAG

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
INSTALL = "sh deploy/continual-serve/install.sh /opt/continual /usr/local/bin/python3.11"
TEXTS = ["good great fine", "bad awful sad", "a table a chair"]
TORCH_STACK = re.compile(r"^(torch|torchvision|transformers|avalanche-lib|nvidia-.*|cuda-.*|triton)$", re.IGNORECASE)


def dockerfile() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(instruction, arguments) of the Dockerfile's final stage, and of the stages before it; continuation lines
    joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    stages: list[list[tuple[str, str]]] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword.upper(), " ".join(rest.split())))
    return stages[-1], [item for stage in stages[:-1] for item in stage]


def env_pairs(arguments: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in shlex.split(arguments))


class Image:
    """The Dockerfile's runtime stage laid out under ``root``: /opt/continual, /tmp and /var/lib/continual."""

    def __init__(self, root: Path):
        self.root = root
        self.final, self.build = dockerfile()
        self.volumes = json.loads(self.one("VOLUME"))
        self.moved = ("/opt/continual", *self.volumes)

    def one(self, keyword: str, stage: list | None = None) -> str:
        found = [arguments for name, arguments in (stage or self.final) if name == keyword]
        assert len(found) == 1, (keyword, found)
        return found[0]

    def host(self, value: str) -> str:
        """A container path (inside any string) as the path under root that stands for it."""
        pattern = "|".join(re.escape(path) for path in self.moved)
        return re.sub(rf"(?<![\w/.])({pattern})(?=/|:|'|$)", lambda m: f"{self.root}{m[1]}", value)

    def env(self) -> dict[str, str]:
        """The image's ENV, paths moved, over this process's environment less its virtual environment (and less the
        tests' ORT_DISABLE_TELEMETRY: the server must switch onnxruntime's telemetry off itself)."""
        dropped = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "ORT_DISABLE_TELEMETRY")
        base = {k: v for k, v in os.environ.items() if k not in dropped}
        base["PATH"] = os.pathsep.join(p for p in base["PATH"].split(os.pathsep) if not p.startswith(sys.prefix))
        values = {key: self.host(value).replace("$PATH", base["PATH"])
                  for key, value in env_pairs(self.one("ENV")).items()}
        # No home (the image's user has none) and the image's /tmp as the temporary folder.
        return {**base, **values, "HOME": str(self.root / "nonexistent"), "TMPDIR": self.host("/tmp")}

    def entrypoint(self) -> list[str]:
        return json.loads(self.one("ENTRYPOINT"))

    def healthcheck(self, port: int) -> list[str]:
        arguments = self.one("HEALTHCHECK")
        command = json.loads(arguments[arguments.index("CMD") + 3:])
        return [part.replace(":8080/", f":{port}/") for part in command]

    def user(self) -> str:
        return self.one("USER")

    def files(self) -> set[tuple[str, int]]:
        """Every file under root outside the volumes, with its modification time: the read-only part."""
        volumes = tuple(self.host(v) for v in self.volumes)
        return {(str(path), path.lstat().st_mtime_ns) for path in self.root.rglob("*")
                if not str(path).startswith(volumes)}


def du_bytes(path: Path) -> int:
    return int(subprocess.run(["du", "-s", "--block-size=1", str(path)], capture_output=True, text=True,
                              check=True).stdout.split()[0])


@contextmanager
def server(command: list[str], env: dict[str, str], cwd: Path, log: Path, port: int) -> Iterator[dict]:
    """Start ``command``; yield {"base", "ready_s"} once /v2/health/ready answers 200 (from the process start)."""
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with log.open("w") as output:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        wait_ready(base, process, log, timeout_s=180, interval_s=0.05)
        yield {"base": base, "ready_s": time.monotonic() - started}
    finally:
        stop_server(process)


def answers(base: str) -> dict:
    predict = requests.post(f"{base}/predict", json={"texts": TEXTS}, timeout=30).json()
    infer = requests.post(f"{base}/v2/models/{MODEL_NAME}/infer", timeout=30, json={
        "inputs": [{"name": "text", "shape": [len(TEXTS)], "datatype": "BYTES", "data": TEXTS}]}).json()
    metadata = requests.get(f"{base}/v2/models/{MODEL_NAME}", timeout=30).json()
    return {"predict": predict, "infer": infer, "metadata": metadata}


@pytest.fixture(scope="module")
def registry(tmp_path_factory, onnx_model_dir) -> str:
    """A SQLite registry whose champion is the tiny model's int8 graph, registered as a round registers it."""
    uri = make_registry(tmp_path_factory.mktemp("serve-install-registry"))
    register_tiny_model(uri, onnx_model_dir, 1, "tweets", tags={INT8_GATE_TAG: "passed: test fixture"})
    return uri


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Image:
    """The Dockerfile's install, run as its build stage runs it, into root/opt/continual."""
    root = tmp_path_factory.mktemp("image-root")
    image = Image(root)
    build_env = env_pairs(image.one("ENV", image.build))
    assert f"RUN {INSTALL}" in [f"{name} {arguments}" for name, arguments in image.build], \
        "the Dockerfile installs the server otherwise: keep this test's INSTALL in step"
    script, venv = shlex.split(INSTALL)[1:3]
    env = {**os.environ, **build_env, "TMPDIR": str(root.parent),  # uv's throwaway cache (UV_NO_CACHE) in tmp
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # uv, from the test extra
    started = time.monotonic()
    subprocess.run(["sh", script, image.host(venv), sys._base_executable], cwd=REPO, env=env, check=True)
    image.install_s = time.monotonic() - started
    for volume in image.volumes:
        Path(image.host(volume)).mkdir(parents=True)
    return image


def run_in(image: Image, code: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([image.host("/opt/continual/bin/python"), *flags, "-c", code], cwd=image.root,
                          env=image.env(), capture_output=True, text=True, timeout=120, check=False)


def test_the_serving_install_has_no_torch_stack(image):
    listed = run_in(image, "import importlib.metadata as m, json; "
                           "print(json.dumps(sorted(d.metadata['Name'] for d in m.distributions())))")
    distributions = json.loads(listed.stdout)
    assert "continual-serve" in distributions and "continual" not in distributions
    assert [name for name in distributions if TORCH_STACK.match(name)] == []
    for module in ("torch", "transformers", "avalanche", "continual"):
        refused = run_in(image, f"import {module}")
        assert refused.returncode == 1 and f"No module named '{module}'" in refused.stderr, refused.stderr
    where = run_in(image, "import service, service.serve, service.backends.onnxrt; print(service.__file__)")
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(image.host("/opt/continual/lib/")), where.stdout


def test_the_server_starts_from_compiled_bytecode(image):
    """A read-only image cannot cache bytecode: what the install compiled must be what Python uses (python -v says
    "code object from <file>.py" for every module it compiles instead)."""
    imported = run_in(image, "import service.app, service.serve, service.backends.onnxrt, mlflow, sklearn.linear_model",
                      "-v")
    assert imported.returncode == 0, imported.stderr[-2000:]
    compiled = [line for line in imported.stderr.splitlines()
                if "bytecode is stale" in line or re.match(r"# code object from .*\.py$", line)]
    assert compiled == []


def test_the_torch_backend_says_what_is_missing(image):
    """Chosen without torch installed, the torch backend fails its load with what to do, not a bare import error."""
    tried = run_in(image, "from pathlib import Path\n"
                          "from service.backends import BackendChoice, BackendUnavailable\nfrom service.backends.loading import load\n"
                          "try:\n"
                          "    load(BackendChoice('torch', 'configured'), Path('.'), Path('.'), None, 64, 1)\n"
                          "except BackendUnavailable as error:\n"
                          "    print(error)\n")
    assert tried.returncode == 0, tried.stderr
    assert "needs torch" in tried.stdout and "continual-serve[torch]" in tried.stdout, tried.stdout


def test_the_image_serves_the_registered_champion_like_the_training_install(image, registry, tmp_path):
    """The Dockerfile's ENTRYPOINT (its CMD replaced by the model to serve, host and port moved to a loopback port)
    serves the registry's int8 champion: the same answers as the training install's server, a passing
    HEALTHCHECK, nothing written outside the declared volumes, at most 1/5 of the training install's size."""
    assert image.user() not in ("root", "0", "0:0") and not image.user().startswith("root:")
    model = ["--registered-model", MODEL_NAME, "--tracking-uri", registry]
    env = image.env()
    read_only = image.files()
    arguments = image.entrypoint()[1:] + model
    serve = {"serving": ([image.entrypoint()[0], *arguments], env, image.root),  # found on the image's PATH
             "training": ([sys.executable, "-m", "service.serve", *arguments],
                          {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"}, REPO)}
    ready: dict[str, list[float]] = {"serving": [], "training": []}
    seen: dict[str, dict] = {}
    for attempt in range(2):  # alternated, so that a busy moment of the shared machine hits both
        for name, (command, environment, cwd) in serve.items():
            shutil.rmtree(image.host("/tmp"))  # each start of a container gets a new tmpfs
            Path(image.host("/tmp")).mkdir()
            port = free_port()
            with server([*command, "--host", "127.0.0.1", "--port", str(port)], environment, cwd,
                        tmp_path / f"{name}-{attempt}.log", port) as running:
                ready[name].append(running["ready_s"])
                seen[name] = answers(running["base"])
                if name == "serving":
                    health = subprocess.run(image.healthcheck(port), env=env, cwd=image.root, timeout=30, check=False)
                    assert health.returncode == 0

    served, trained = seen["serving"], seen["training"]
    assert served["metadata"]["backend"]["name"] == "onnx-int8"
    assert served["metadata"]["platform"] == "onnxruntime_onnx"
    assert served["predict"]["model"]["version"] == "1" and served["infer"]["model_version"] == "1"
    labels = [p["label"] for p in served["predict"]["predictions"]]
    assert set(labels) <= {"neg", "neu", "pos"}
    outputs = {o["name"]: o for o in served["infer"]["outputs"]}
    assert outputs["label"]["data"] == labels and outputs["probabilities"]["shape"] == [3, 3]
    assert served["predict"]["predictions"] == trained["predict"]["predictions"]
    assert served["infer"]["outputs"] == trained["infer"]["outputs"]
    assert image.files() == read_only, "the server wrote outside the Dockerfile's volumes"
    assert not Path(env["HOME"]).exists()

    serving_bytes = du_bytes(image.host("/opt/continual"))
    training_bytes = du_bytes(Path(sys.prefix))
    report = {"serving_env_gb": round(serving_bytes / 1e9, 3), "training_env_gb": round(training_bytes / 1e9, 3),
              "size_ratio": round(serving_bytes / training_bytes, 3), "install_s": round(image.install_s, 1),
              "ready_s": {name: [round(s, 2) for s in seconds] for name, seconds in ready.items()}}
    print(f"\nserving install against training install: {json.dumps(report)}")
    assert serving_bytes * 5 <= training_bytes, report
    # Both wait on the same registry download and ONNX load; the serving side imports less. The slack absorbs the
    # other jobs of a shared machine.
    assert min(ready["serving"]) <= 1.2 * min(ready["training"]) + 1.0, report
