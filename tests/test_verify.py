"""`continual verify`, the first stage of `dvc repro`, on real git + DVC workspaces: an empty stream stops the
pipeline before anything is written, and data/arrivals/ left out of step with git by a `git checkout` is told
from data that is foreign or lost."""
import hashlib
from pathlib import Path

import pytest

from helpers import BIN, GIT, run


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root, .git included (path -> sha256, or "dir"), but DVC's lock files in .dvc/tmp, which
    every dvc command writes."""
    return {path.relative_to(root).as_posix(): "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
            for path in root.rglob("*") if not path.relative_to(root).as_posix().startswith(".dvc/tmp")}


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    run(tmp_path, BIN / "continual", "init", "ws")
    root = tmp_path / "ws"
    run(root, *GIT, "commit", "-qm", "workspace")
    return root


def arrival(path: Path, salt: str) -> Path:
    path.write_text("text,label\n" + "".join(f"{salt} good {i},pos\n{salt} bad {i},neg\n" for i in range(5)))
    return path


def test_repro_with_no_arrivals_fails_at_once_saying_to_ingest_and_writes_nothing(workspace):
    before = snapshot(workspace)
    result = run(workspace, BIN / "dvc", "repro", check=False)
    assert result.returncode != 0
    assert "no arrivals yet" in result.stderr and "continual ingest FILE --name NAME" in result.stderr
    assert "Running stage 'report'" not in result.stdout  # stopped at the first stage
    assert snapshot(workspace) == before  # no dvc.lock, no .continual/verified
    assert run(workspace, "git", "status", "--porcelain").stdout == ""
    assert run(workspace, BIN / "continual", "verify", check=False).returncode == 1


def test_after_git_checkout_of_an_older_commit_verify_advises_dvc_checkout(workspace, tmp_path):
    for name in ("one", "two"):
        run(workspace, BIN / "continual", "ingest", arrival(tmp_path / f"{name}.csv", name), "--name", name)
        run(workspace, *GIT, "commit", "-qm", name)
    run(workspace, "git", "checkout", "-q", "HEAD~1")  # stream.yaml registers only 0001-one; 0002-two stays

    stale = run(workspace, BIN / "continual", "verify", check=False)
    assert stale.returncode != 0
    assert "out of step with git" in stale.stderr and "run `dvc checkout`" in stale.stderr
    assert "data/arrivals/0002-two" in stale.stderr and "ingest it" not in stale.stderr

    run(workspace, BIN / "dvc", "checkout", check=False)  # fails on rounds/ (no round recorded yet), arrivals done
    assert sorted(p.name for p in (workspace / "data" / "arrivals").iterdir()) == [".gitignore", "0001-one",
                                                                                   "0001-one.dvc"]
    run(workspace, BIN / "continual", "verify")

    run(workspace, "git", "checkout", "-q", "-")  # forward again: 0002-two registered, not in data/arrivals/
    behind = run(workspace, BIN / "continual", "verify", check=False)
    assert "missing from data/arrivals/: 0002-two" in behind.stderr and "run `dvc checkout`" in behind.stderr
    run(workspace, BIN / "dvc", "checkout", check=False)
    run(workspace, BIN / "continual", "verify")


def test_verify_tells_lost_and_foreign_data_from_data_out_of_step(workspace, tmp_path):
    run(workspace, BIN / "continual", "ingest", arrival(tmp_path / "one.csv", "one"), "--name", "one")
    arrivals = workspace / "data" / "arrivals"
    foreign = arrivals / "extra"  # a folder copied in by hand: never stored by DVC
    foreign.mkdir()
    (foreign / "rows.csv").write_text("text,label\nhello,pos\n")
    result = run(workspace, BIN / "continual", "verify", check=False)
    assert "data/arrivals/extra: not registered" in result.stderr and "ingest it" in result.stderr
    assert "out of step" not in result.stderr
    (foreign / "rows.csv").unlink()
    foreign.rmdir()

    (arrivals / "0001-one" / "test.jsonl").unlink()
    cache = workspace / ".dvc" / "cache"
    cache.rename(tmp_path / "cache")  # the only copy gone too: lost here, `dvc pull` is the way back
    lost = run(workspace, BIN / "continual", "verify", check=False)
    assert "0001-one (without test.jsonl), and not in this workspace's DVC cache" in lost.stderr
    assert "dvc pull" in lost.stderr and "out of step" not in lost.stderr
    (tmp_path / "cache").rename(cache)
    restorable = run(workspace, BIN / "continual", "verify", check=False)
    assert "out of step with git" in restorable.stderr and "0001-one (without test.jsonl)" in restorable.stderr

    run(workspace, BIN / "dvc", "checkout", check=False)
    with (arrivals / "0001-one" / "train.jsonl").open("a") as f:  # edited by hand: allowed, and said so
        f.write('{"id": "x", "text": "more", "label": "pos"}\n')
    edited = run(workspace, BIN / "continual", "verify")
    assert "edited since it was ingested" in edited.stderr
