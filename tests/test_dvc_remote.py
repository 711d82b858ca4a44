"""A DVC remote: `continual init --remote`, `dvc push`, a fresh `git clone`, `dvc pull`, and nothing retrained.

The remote is a local folder (what `s3://`/`gs://` remotes do, DVC does the same way); the rounds are ridge
rounds on the tiny model without ONNX export, so the two rounds cost seconds.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from continual.workspace.create import DVC_REMOTE
from continual.workspace.hashes import dir_hash
from continual.workspace.layout import Workspace
from helpers import BIN, GIT, rounds_run, run, write_arrival

pytestmark = pytest.mark.slow
ARRIVALS = {"one": {"neg": "awful terrible", "pos": "lovely great"},
            "two": {"neg": "broken useless", "neu": "plain okay", "pos": "works fine"}}


def snapshot(root: Path) -> dict[str, str]:
    """Every file of the workspace (the DVC cache included) -> sha256; DVC's scratch (.dvc/tmp) and git left out."""
    return {path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(root.rglob("*")) if path.is_file()
            and not path.relative_to(root).as_posix().startswith((".git/", ".dvc/tmp/"))}


def round_times(root: Path) -> dict[str, int]:
    return {path.relative_to(root).as_posix(): path.stat().st_mtime_ns
            for path in sorted((root / "rounds").rglob("*"))}


@pytest.fixture(scope="module")
def pushed(tmp_path_factory, tiny_model_dir):
    """A two-round stream made with `continual init --remote storage` (a relative folder), committed and pushed."""
    tmp = tmp_path_factory.mktemp("remote")
    root = tmp / "stream"
    init = run(tmp, BIN / "continual", "init", str(root), "--remote", "storage")
    assert "DVC remote: storage" in init.stdout
    staged = run(root, "git", "diff", "--cached", "--name-only").stdout.split()
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["model"]["base"] = str(tiny_model_dir)
    params["strategy"]["name"] = "ridge"
    params["export"]["onnx"] = False
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for name, labels in ARRIVALS.items():
        arrival = write_arrival(tmp / f"{name}.csv", labels, 12, name)
        run(root, BIN / "continual", "ingest", str(arrival), "--name", name)
        run(root, BIN / "dvc", "repro")
    run(root, *GIT, "add", "-A")
    run(root, *GIT, "commit", "-qm", "two rounds")
    push = run(root, BIN / "dvc", "push")
    return {"root": root, "remote": tmp / "storage", "staged": staged, "push": push, "tmp": tmp}


def test_init_makes_the_remote_the_default_one_in_the_committed_dvc_config(pushed):
    root = pushed["root"]
    assert ".dvc/config" in pushed["staged"]  # staged with the rest of the workspace by `continual init`
    config = run(root, "git", "show", "HEAD:.dvc/config").stdout
    assert f"remote = {DVC_REMOTE}" in config
    assert f"url = {pushed['remote']}" in config  # a relative folder, made absolute from where init ran
    assert not (root / ".dvc" / "config.local").exists()
    assert "files pushed" in pushed["push"].stdout and any(pushed["remote"].rglob("*"))


def test_a_fresh_clone_pulls_both_rounds_and_trains_nothing(pushed):
    root, tmp = pushed["root"], pushed["tmp"]
    clone = tmp / "clone"
    run(tmp, "git", "clone", "-q", str(root), str(clone))
    assert Workspace.at(clone).identity == Workspace.at(root).identity  # committed: the same MLflow lineages
    assert not (clone / "rounds").exists()
    run(clone, BIN / "dvc", "pull")
    for folder in ("rounds/0001-one", "rounds/0002-two", "data/arrivals/0001-one", "data/arrivals/0002-two"):
        assert dir_hash(clone / folder) == dir_hash(root / folder) != ""  # arrivals and rounds, byte for byte

    store = {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}  # the original's tracking store
    client = MlflowClient(store["MLFLOW_TRACKING_URI"])
    before = {run.info.run_id for run in client.search_runs([e.experiment_id for e in client.search_experiments()])}
    pulled_at = round_times(clone)
    repro = run(clone, BIN / "dvc", "repro", **store)
    assert rounds_run(repro) == [] and "Running stage 'track'" in repro.stdout
    assert round_times(clone) == pulled_at  # no round folder was touched
    # Clean but for the always-changed stages. (Before this first repro, dvc status lists round 1 too: its
    # dependency .continual/verified is written by the verify stage, never pushed or committed.)
    assert "round@" not in run(clone, BIN / "dvc", "status").stdout

    track = run(clone, BIN / "continual", "track", **store)
    assert "2 rounds in the stream, 0 were missing from MLflow" in track.stdout  # it found the original's runs
    assert "was gated before" in track.stdout
    after = {run.info.run_id for run in client.search_runs([e.experiment_id for e in client.search_experiments()])}
    assert after == before  # nothing new logged

    status = run(clone, BIN / "continual", "status").stdout
    assert "0001-one" in status and "0002-two" in status and "not trained yet" not in status


def test_a_remote_that_cannot_be_written_fails_the_push_and_loses_nothing(pushed):
    # Tests run as root here, and chmod does not stop root: a folder under /proc cannot be created even by root.
    root = pushed["root"]
    run(root, BIN / "dvc", "remote", "add", "--local", "unwritable", "/proc/continual-remote")
    try:
        (root / "extra.txt").write_text("new data, not pushed yet\n")
        run(root, BIN / "dvc", "add", "extra.txt")
        before = snapshot(root)
        push = run(root, BIN / "dvc", "push", "-r", "unwritable", check=False)
        assert push.returncode != 0
        assert "ERROR" in push.stderr and "/proc/continual-remote" in push.stderr  # DVC's own message
        assert snapshot(root) == before
        assert "round@" not in run(root, BIN / "dvc", "status").stdout
        assert run(root, BIN / "dvc", "push").returncode == 0  # the real remote still takes it
    finally:
        run(root, BIN / "dvc", "remote", "remove", "--local", "unwritable", check=False)
