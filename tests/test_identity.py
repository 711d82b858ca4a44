"""The workspace identity (``.continual/workspace_id``) names its MLflow lineages: it must survive a clone."""
from __future__ import annotations

import subprocess

from continual.workspace.create import create_workspace
from continual.workspace.layout import ID_FILE, Workspace
from helpers import GIT


def git(cwd, *args: str) -> str:
    return subprocess.run(GIT + list(args), cwd=cwd, capture_output=True, text=True, check=True).stdout


def test_init_writes_the_identity_and_stages_it_so_a_clone_keeps_it(tmp_path, capsys):
    ws = create_workspace(tmp_path / "ws")
    identity = (ws.root / ID_FILE).read_text().strip()
    assert len(identity) == 32 and ws.identity == identity
    assert ID_FILE in git(ws.root, "diff", "--cached", "--name-only").split()
    assert "continual:" not in capsys.readouterr().err  # nothing to tell: init staged it

    git(ws.root, "commit", "-qm", "workspace")
    git(tmp_path, "clone", "-q", str(ws.root), "clone")
    assert Workspace.at(tmp_path / "clone").identity == identity


def test_scratch_files_under_dot_continual_stay_out_of_git(tmp_path):
    ws = create_workspace(tmp_path / "ws")
    for name in ("verified", "registry.lock", "compare/naive-seed1/stream.yaml"):
        path = ws.root / ".continual" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x\n")
    assert git(ws.root, "status", "--porcelain", "--untracked-files=all", ".continual").strip() == f"A  {ID_FILE}"


def test_an_older_workspace_gets_an_identity_on_first_use_and_is_told_to_commit_it(tmp_path, capsys):
    root = tmp_path / "old"
    root.mkdir()
    (root / "dvc.yaml").write_text("stages: {}\n")  # a workspace from before init wrote the identity
    first = Workspace.at(root).identity
    assert f"commit it (git add {ID_FILE}" in capsys.readouterr().err
    assert Workspace.at(root).identity == first  # made once, then read
    assert capsys.readouterr().err == ""

    scratch = tmp_path / "scratch"  # `continual compare`'s scratch copies have no dvc.yaml: no note
    scratch.mkdir()
    assert Workspace.at(scratch).identity != first
    assert capsys.readouterr().err == ""
