"""Issue 22, where a workspace lives: a moved or copied workspace serves and tracks, a folder name with URL
syntax in it ('%', '?', '#', a space, non-ASCII) changes nothing, and `dvc exp run --temp` or a queued
experiment tracks into the workspace's own MLflow store, not into DVC's temporary copy of it."""
from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
import yaml
from serving import free_port, stop_server, wait_ready
from helpers import BIN, GIT, run, write_arrival

from continual.registry.local_store import follow_move, store_uri
from continual.registry.model_name import registered_model
from continual.params import load_params
from continual.workspace.layout import Workspace
from service.model_source import (
    create_sqlite_stores,
    hf_folders,
    source_for,
    sqlite_database,
)

ODD = "a %25 b?c#d é"  # a percent escape, a query, a fragment, spaces and a non-ASCII letter
LOCATIONS = (("experiments", "artifact_location"), ("runs", "artifact_uri"), ("logged_models", "artifact_location"),
             ("model_versions", "storage_location"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir) -> Path:
    """A committed workspace with one round trained, logged and champion (never changed: tests copy it)."""
    root = tmp_path_factory.mktemp("trained") / "ws"
    run(root.parent, BIN / "continual", "init", str(root))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["model"].update(base=str(tiny_model_dir), max_length=32)
    params["train"].update(epochs=1, batch_size=16)
    params["strategy"]["replay"]["mem_size"] = 20
    params["promotion"].update(max_avg_acc_drop=1.0, max_forgetting=1.0, min_new_acc=0.0)  # every round accepted
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    one = write_arrival(root.parent / "one.csv", {"neg": "awful terrible", "pos": "lovely great"}, 12, "one")
    run(root, BIN / "continual", "ingest", str(one), "--name", "one")
    run(root, BIN / "dvc", "repro")
    run(root, *GIT, "add", "-A")
    run(root, *GIT, "commit", "-qm", "one round")
    return root


def copy_of(trained: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(trained, dest, symlinks=True)
    return dest


def stored_locations(root: Path) -> list[str]:
    with sqlite3.connect(root / "mlflow.db") as db:
        return [value for table, column in LOCATIONS for (value,) in db.execute(f"SELECT {column} FROM {table}")]


def versions(root: Path) -> list:
    from mlflow import MlflowClient

    name = registered_model(Workspace.at(root), load_params(root / "params.yaml"))
    return sorted(MlflowClient(store_uri(Workspace.at(root))).search_model_versions(f"name = '{name}'"),
                  key=lambda version: int(version.version))


def champion(root: Path) -> str:
    from mlflow import MlflowClient

    name = registered_model(Workspace.at(root), load_params(root / "params.yaml"))
    return str(MlflowClient(store_uri(Workspace.at(root))).get_model_version_by_alias(name, "champion").version)


def load_version(root: Path, version: str, into: Path) -> Path:
    """Version ``version`` as the server fetches it (service.model_source, with the workspace's store)."""
    uri = store_uri(Workspace.at(root))
    name = registered_model(Workspace.at(root), load_params(root / "params.yaml"))
    source = source_for(f"models:/{name}/{version}", uri, uri)
    model_dir, _ = hf_folders(source.fetch(source.resolve(), into))
    assert (model_dir / "config.json").is_file()
    return model_dir


@contextmanager
def continual_serve(root: Path, log: Path):
    """`continual serve` run in the workspace, as a user starts it; yields its base URL once a model is loaded."""
    port = free_port()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "CONTINUAL_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with log.open("w") as output:
        process = subprocess.Popen([str(BIN / "continual"), "serve", "--host", "127.0.0.1", "--port", str(port),
                                    "--workers", "1"], cwd=root, env=env, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process, log)
        yield base
    finally:
        stop_server(process)


# -- moved -----------------------------------------------------------------------------------------------


def test_a_moved_workspace_serves_its_champion_and_tracks_where_it_is_now(trained, tmp_path):
    before = copy_of(trained, tmp_path / "before" / "ws")
    follow_move(Workspace.at(before), store_uri(Workspace.at(before)))  # as if trained here
    after = tmp_path / "after" / "ws"
    after.parent.mkdir()
    before.rename(after)  # `mv`: the old folder is gone

    with continual_serve(after, tmp_path / "serve.log") as base:
        answer = requests.post(f"{base}/predict", json={"texts": ["lovely great"]}, timeout=30)
        assert answer.status_code == 200 and answer.json()["model"]["version"] == "1"
    said = (tmp_path / "serve.log").read_text()
    assert f"this workspace was at {before} when mlflow.db was written" in said and f"point to {after}" in said

    two = write_arrival(tmp_path / "two.csv", {"neg": "broken useless", "pos": "works fine"}, 12, "two")
    run(after, BIN / "continual", "ingest", str(two), "--name", "two")
    repro = run(after, BIN / "dvc", "repro")
    assert "round 0002-two -> run" in repro.stdout and "this workspace was at" not in repro.stdout  # moved once
    assert not before.exists()  # nothing recreated the old folder (its mlartifacts/)
    locations = stored_locations(after)
    assert locations and all(value.startswith((after.as_uri() + "/", f"{after}/")) for value in locations)
    assert [v.version for v in versions(after)] == [1, 2]
    load_version(after, "2", tmp_path / "v2")
    load_version(after, "1", tmp_path / "v1")


def test_a_copy_rewrites_its_own_store_and_leaves_the_original_alone(trained, tmp_path):
    original = copy_of(trained, tmp_path / "original")
    clone = copy_of(original, tmp_path / "clone")  # `cp -r`: both folders stay
    original_db = (original / "mlflow.db").read_bytes()
    ws = Workspace.at(clone)
    follow_move(ws, store_uri(ws))
    assert (original / "mlflow.db").read_bytes() == original_db
    assert all(str(original) not in value for value in stored_locations(clone))
    load_version(clone, "1", tmp_path / "v1")
    (original / "mlartifacts").rename(tmp_path / "gone")  # the clone needs nothing of the original's
    load_version(clone, "1", tmp_path / "again")


def test_a_store_that_is_not_the_workspace_own_is_never_rewritten(trained, tmp_path):
    """A database named by $MLFLOW_TRACKING_URI or tracking.uri (another workspace's, a team's) keeps its locations,
    even when the workspace that opens it has moved; and a folder reached by another path is not a move."""
    other = copy_of(trained, tmp_path / "other")
    follow_move(Workspace.at(other), store_uri(Workspace.at(other)))  # written at other/ from now on
    other_db = (other / "mlflow.db").read_bytes()
    moved = copy_of(trained, tmp_path / "moved")
    follow_move(Workspace.at(moved), store_uri(Workspace.at(other)))
    assert (other / "mlflow.db").read_bytes() == other_db

    alias = tmp_path / "alias"
    alias.symlink_to(other)  # the same folder under another name: its locations still resolve
    ws = Workspace(alias)  # not resolved, as a bind mount would show it
    follow_move(ws, store_uri(ws))
    assert (other / "mlflow.db").read_bytes() == other_db


# -- odd characters in the path ------------------------------------------------------------------------


def test_a_workspace_under_a_folder_named_with_url_syntax_trains_tracks_and_serves(trained, tmp_path):
    parent = tmp_path / ODD
    root = copy_of(trained, parent / "ws")
    (root / "mlflow.db").unlink()  # the store is created here, at this path
    shutil.rmtree(root / "mlartifacts")
    two = write_arrival(tmp_path / "two.csv", {"neg": "broken useless", "pos": "works fine"}, 12, "two")
    run(root, BIN / "continual", "ingest", str(two), "--name", "two")
    repro = run(root, BIN / "dvc", "repro")
    assert "Running stage 'round@0002-two'" in repro.stdout
    assert sorted(os.listdir(tmp_path)) == sorted([ODD, "two.csv"])  # no database or folder beside it
    assert os.listdir(parent) == ["ws"]
    assert [v.version for v in versions(root)] == [1, 2]
    load_version(root, champion(root), tmp_path / "champion")

    assert sqlite_database(store_uri(Workspace.at(root))) == root / "mlflow.db"  # as the server reads the URL
    fresh = parent / "fresh"
    fresh.mkdir()
    create_sqlite_stores(["models:/m@champion"], store_uri(Workspace.at(fresh)), None)
    assert (fresh / "mlflow.db").stat().st_size > 0  # the server's master made it where the URL says
    assert sorted(os.listdir(tmp_path)) == sorted([ODD, "two.csv", "champion"])


# -- DVC's temporary experiments -------------------------------------------------------------------------


def test_temp_and_queued_experiments_track_into_the_workspace_store(trained, tmp_path):
    root = copy_of(trained, tmp_path / "ws")
    before = [v.version for v in versions(root)]
    temp = run(root, BIN / "dvc", "exp", "run", "--temp", "-S", "train.epochs=2")
    assert "promotion: skipped, the alias stays where it is (DVC experiment" in temp.stdout
    after_temp = versions(root)
    assert [v.version for v in after_temp] == before + [before[-1] + 1]
    assert "promotion.skipped" in after_temp[-1].tags and champion(root) == "1"
    load_version(root, str(after_temp[-1].version), tmp_path / "temp")  # DVC deleted its copy; the model is here

    run(root, BIN / "dvc", "exp", "run", "--queue", "-S", "train.epochs=3")
    run(root, BIN / "dvc", "queue", "start")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        status = run(root, BIN / "dvc", "queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(2)
    assert "Success" in status, status
    queued = versions(root)
    assert len(queued) == len(after_temp) + 1 and champion(root) == "1"
    load_version(root, str(queued[-1].version), tmp_path / "queued")
    assert not list((root / ".dvc" / "tmp").rglob("mlflow.db"))  # no store was made in a copy


def test_a_dvc_temporary_copy_belongs_to_its_workspace(tmp_path):
    from continual.registry.lock import LOCK_FILE, registry_lock

    home = tmp_path / "ws"
    home.mkdir()
    (home / "stream.yaml").write_text("rounds: {}\n")
    for copy in (home / ".dvc/tmp/exps/tmpa1b2c3", home / ".dvc/tmp/exps/standalone/tmpd4e5f6"):
        copy.mkdir(parents=True)
        (copy / "stream.yaml").write_text("rounds: {}\n")
        ws = Workspace.find(copy)
        assert ws.root == copy and ws.home == home
        assert store_uri(ws) == store_uri(Workspace.at(home))
        assert ws.identity == Workspace.at(home).identity and not (copy / ".continual").exists()
        with registry_lock(ws):
            assert (home / LOCK_FILE).exists()
    elsewhere = tmp_path / "x" / ".dvc" / "tmp" / "exps" / "tmp0"  # under no workspace: its own home
    elsewhere.mkdir(parents=True)
    assert Workspace.at(elsewhere).home == elsewhere
