"""`continual init`: a new workspace from the template (continual/template/), and the settings init may write."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import yaml

from continual.workspace.layout import ID_FILE, Workspace, write_identity

# .continual/ holds scratch state (compare runs, the verify marker, lock files), except the workspace id,
# which is committed: it names the workspace's MLflow lineages, and a clone must continue them.
# rounds/ is DVC's (cached outputs). DVC ignores each round folder itself, but when a later stage of the
# same `dvc repro` fails (the track stage, MLflow down) it takes back the .gitignore lines that run added
# (dvc 3.67, dvc/repo/scm_context.py: SCMContext.__call__ on an exception), and the round, up to date,
# never gets them again: the folder would show up in `git status`, and `git add -A` would commit a model.
WORKSPACE_GITIGNORE = "/mlflow.db\n/mlartifacts/\n/rounds/\n/.continual/*\n!/.continual/workspace_id\n"


DVC_REMOTE = "storage"  # the name `continual init --remote URL` gives the workspace's default DVC remote


def create_workspace(root: str | Path, tracking_uri: str | None = None, remote: str | None = None) -> Workspace:
    """A git repository with DVC initialised, dvc.yaml, params.yaml, an empty stream and data/arrivals/, all staged.

    ``tracking_uri`` goes to params.yaml's ``tracking.uri``; ``remote`` becomes the default DVC remote in
    ``.dvc/config`` (the committed config, not config.local), so every clone pushes and pulls there."""
    ws = Workspace.at(root)
    if (ws.root / "dvc.yaml").exists():
        raise FileExistsError(f"{ws.root} is already a workspace (it has dvc.yaml)")
    ws.root.mkdir(parents=True, exist_ok=True)
    dvc = str(Path(sys.executable).parent / "dvc")

    def run(*cmd: str) -> None:
        subprocess.run(cmd, cwd=ws.root, check=True, stdout=subprocess.DEVNULL)

    if not (ws.root / ".git").exists():
        run("git", "init", "-q")
    run(dvc, "init", "-q")
    run(dvc, "config", "core.analytics", "false")
    template = resources.files("continual") / "template"
    for name in ("dvc.yaml", "params.yaml"):
        with resources.as_file(template / name) as src:
            shutil.copyfile(src, ws.root / name)
    if tracking_uri:
        set_tracking_uri(ws.params_file, tracking_uri)
    if remote:
        add_remote(ws, remote)
    ws.stream_file.write_text(ws.stream_text([]))
    ws.arrivals_dir.mkdir(parents=True, exist_ok=True)
    (ws.arrivals_dir / ".gitignore").touch()
    (ws.root / ".gitignore").write_text(WORKSPACE_GITIGNORE)
    write_identity(ws.root / ID_FILE)
    run("git", "add", "dvc.yaml", "params.yaml", "stream.yaml", ".gitignore", ".dvc", "data/arrivals/.gitignore",
        ID_FILE)
    return ws


def set_tracking_uri(params_file: Path, uri: str) -> None:
    """Write ``tracking.uri`` into a params.yaml, keeping its comments (the line the template ships)."""
    text = params_file.read_text()
    tracking = re.search(r"(?m)^tracking:\n", text)
    line = re.compile(r"(?m)^  uri: .*$")
    found = line.search(text, tracking.end()) if tracking else None
    if found is None:
        raise ValueError(f"{params_file} has no tracking.uri line to set")
    text = text[: found.start()] + f"  uri: {json.dumps(uri)}" + text[found.end():]
    if (yaml.safe_load(text).get("tracking") or {}).get("uri") != uri:
        raise ValueError(f"could not write tracking.uri {uri!r} into {params_file}")
    params_file.write_text(text)


def add_remote(ws: Workspace, url: str) -> None:
    """`dvc remote add -d storage URL`: the default remote, in .dvc/config. A local path is made absolute from
    the caller's folder (DVC would read a relative one from .dvc/)."""
    if "://" not in url:
        url = str(Path(url).expanduser().resolve())
    dvc = str(Path(sys.executable).parent / "dvc")
    done = subprocess.run([dvc, "remote", "add", "-d", "-f", DVC_REMOTE, url], cwd=ws.root, capture_output=True,
                          text=True)
    if done.returncode:
        raise ValueError(f"dvc remote add {url} failed: {(done.stderr or done.stdout).strip()}")
