"""What every chaos section shares: paths, the environment its processes run in, logging, subprocesses, workspaces."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HOSTILE = ROOT / "tests" / "fixtures" / "hostile"
MODEL_NAME = "continual-classifier"
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1",
       "MLFLOW_DISABLE_TELEMETRY": "true", "CONTINUAL_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       "DVC_NO_ANALYTICS": "1", "PYTHONWARNINGS": "ignore"}
ENV.pop("MLFLOW_TRACKING_URI", None)
for _name in ("HF_HUB_OFFLINE", "MLFLOW_DISABLE_TELEMETRY", "TOKENIZERS_PARALLELISM"):
    os.environ[_name] = ENV[_name]
os.environ.pop("MLFLOW_TRACKING_URI", None)


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


def sh(cmd: list, cwd: Path, check: bool = True, env: dict | None = None, timeout: float | None = 900,
       ) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env or ENV, capture_output=True, text=True,
                          timeout=timeout)
    if check and done.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({done.returncode}):\n{done.stdout[-2000:]}\n"
                           f"{done.stderr[-2000:]}")
    return done


def load_make():
    spec = importlib.util.spec_from_file_location("hostile_make", HOSTILE / "make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def clean_csv(path: Path, salt: str, per_label: int = 8) -> Path:
    rows = ["text,label"] + [f"{word} {salt} number {i},{label}"
                             for label, word in (("neg", "awful dreadful"), ("pos", "lovely splendid"))
                             for i in range(per_label)]
    path.write_text("\n".join(rows) + "\n")
    return path


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root -> sha256 of its bytes ("dir", or "link:target"), .git and .dvc included."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                out[rel] = f"link:{os.readlink(path)}"
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def make_workspace(root: Path, tiny: Path, lenient_gate: bool = False) -> Path:
    import yaml

    sh([BIN / "continual", "init", root], root.parent)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["model"].update(base=str(tiny), max_length=32)
    params["train"].update(epochs=1, batch_size=16, eval_batch_size=64)
    params["strategy"]["name"] = "replay+ewc"
    params["strategy"]["replay"]["mem_size"] = 20
    params["tracking"]["registered_model"] = MODEL_NAME  # set by hand: used as written
    if lenient_gate:  # every round is accepted, so every round moves the alias: the kill stream needs moves
        params["promotion"].update(max_avg_acc_drop=1.0, max_forgetting=1.0, min_new_acc=0.0)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))
    git = ["git", "-c", "user.name=chaos", "-c", "user.email=chaos@localhost", "-c", "commit.gpgsign=false"]
    sh([*git, "add", "-A"], root)
    sh([*git, "commit", "-qm", "workspace"], root)
    return root


def stream_keys(root: Path) -> list[str]:
    import yaml

    path = root / "stream.yaml"
    rounds = ((yaml.safe_load(path.read_text()) or {}).get("rounds") or {}) if path.exists() else {}
    return sorted(rounds, key=lambda k: rounds[k]["index"])


def process_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(int(pid)).status() != psutil.STATUS_ZOMBIE  # killed, unreaped: not alive
    except (psutil.NoSuchProcess, ValueError):
        return False
    except psutil.Error:
        return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
