"""A team tracking server: a real PostgreSQL, `mlflow server` on loopback in front of it with its own artifact
root, and two streams whose `dvc repro` runs at the same time against it (tests/team_server.py starts both).

Rounds are ridge rounds on the tiny model without ONNX export: what is under test is the tracking, and a ridge
round trains nothing (one forward pass), so four rounds at once fit on two shared cores.
"""
from __future__ import annotations

import os
import subprocess

import psycopg
import pytest
import yaml
from mlflow import MlflowClient

from continual.registry.model_name import registered_model
from continual.params import load_params
from continual.workspace.layout import Workspace
from team_server import mlflow_server, postgres
from helpers import BIN, GIT, rounds_run, run, write_arrival
from serving import free_port

pytestmark = pytest.mark.slow
LABELS = {"one": {"neg": "awful terrible", "pos": "lovely great"},
          "two": {"neg": "broken useless", "neu": "plain okay", "pos": "works fine"},
          "three": {"neg": "bad poor", "pos": "good nice"}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("team")
    with postgres() as database, mlflow_server(database, folder) as started:
        yield started


def make_stream(root, tiny_model_dir, server, **tracking) -> Workspace:
    """`continual init --tracking-uri` against the live server, a tiny ridge stream, committed."""
    run(root.parent, BIN / "continual", "init", str(root), "--tracking-uri", server.uri)
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert params["tracking"]["uri"] == server.uri and params["tracking"]["registered_model"] == ""
    params["model"]["base"] = str(tiny_model_dir)
    params["strategy"]["name"] = "ridge"
    params["export"]["onnx"] = False
    params["promotion"].update(max_avg_acc_drop=1.0, max_forgetting=1.0, min_new_acc=0.0)  # every round passes
    params["tracking"].update(tracking)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(root, *GIT, "add", "-A")
    run(root, *GIT, "commit", "-qm", "stream")
    return Workspace.at(root)


def repro_at_once(roots) -> list[subprocess.CompletedProcess]:
    """`dvc repro` in every workspace at the same moment (the tracking URI comes from each params.yaml)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "CONTINUAL_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    procs = [subprocess.Popen([str(BIN / "dvc"), "repro"], cwd=root, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for root in roots]
    done = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=600)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:  # a timeout: stop the other one too
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return done


def ingest(ws: Workspace, tmp_path, name: str) -> None:
    arrival = write_arrival(tmp_path / f"{ws.root.name}-{name}.csv", LABELS[name], 12, f"{ws.root.name} {name}")
    run(ws.root, BIN / "continual", "ingest", str(arrival), "--name", name)


def lineage_runs(client: MlflowClient, ws: Workspace, kind: str = "round") -> list:
    (experiment,) = client.search_experiments(filter_string="name = 'continual'")
    query = f"tags.`continual.kind` = '{kind}' and tags.`continual.lineage` LIKE '%:{ws.identity[:12]}'"
    return client.search_runs([experiment.experiment_id], query)


@pytest.fixture(scope="module")
def streams(server, tiny_model_dir, tmp_path_factory):
    """Two streams, two rounds each, both `dvc repro` at once each time."""
    tmp = tmp_path_factory.mktemp("streams")
    a, b = (make_stream(tmp / name, tiny_model_dir, server) for name in ("sentiment", "support"))
    for name, key in (("one", "0001-one"), ("two", "0002-two")):
        for ws in (a, b):
            ingest(ws, tmp, name)
        for done in repro_at_once([a.root, b.root]):
            assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            assert rounds_run(done) == [key]
    return a, b


def test_two_streams_at_once_on_one_server_land_every_run_version_and_alias(streams, server):
    client = MlflowClient(server.uri)
    names, champions = set(), {}
    for ws in streams:
        name = registered_model(ws, load_params(ws.params_file))
        assert name == f"continual-{ws.identity[:8]}"  # derived from the committed identity: never shared
        names.add(name)
        runs = {run.info.run_name: run for run in lineage_runs(client, ws)}
        assert sorted(runs) == ["0001-one", "0002-two"]
        assert all(run.info.status == "FINISHED" and "continual.round_hash" in run.data.tags for run in runs.values())
        assert len(lineage_runs(client, ws, "lineage")) == 1
        versions = {str(v.version): v for v in client.search_model_versions(f"name = '{name}'")}
        assert sorted(versions) == ["1", "2"]
        assert {v.tags["workspace"] for v in versions.values()} == {ws.identity[:12]}
        assert {v.run_id for v in versions.values()} == {run.info.run_id for run in runs.values()}
        assert all(v.tags["promotion.decision"] == "accepted" for v in versions.values())
        champion = client.get_model_version_by_alias(name, "champion")
        assert str(champion.version) == "2" and champion.run_id == runs["0002-two"].info.run_id
        assert client.get_registered_model(name).tags["champion.history"] == "1,2"
        champions[name] = champion.run_id
    assert len(names) == 2 and len(set(champions.values())) == 2  # the two champions never collide

    # It all went through PostgreSQL, and the models through the server's own artifact root.
    with psycopg.connect(f"host=127.0.0.1 port={server.database.port} user=postgres dbname=mlflow") as conn:
        assert conn.execute("select count(*) from model_versions").fetchone()[0] == 4
        assert conn.execute("select count(*) from registered_model_aliases").fetchone()[0] == 2
    assert len(list(server.artifacts.rglob("MLmodel"))) == 4
    assert not any((ws.root / "mlflow.db").exists() or (ws.root / "mlartifacts").exists() for ws in streams)


def test_init_refuses_a_tracking_server_that_does_not_answer(tmp_path):
    # MLFLOW_TRACKING_URI here; --tracking-uri against the stopped team server in the outage test below.
    dead = f"http://127.0.0.1:{free_port()}"
    result = run(tmp_path, BIN / "continual", "init", str(tmp_path / "ws"), check=False, MLFLOW_TRACKING_URI=dead)
    assert result.returncode == 1
    assert f"the MLflow tracking server {dead} did not answer" in result.stderr
    assert "nothing was created" in result.stderr and not (tmp_path / "ws").exists()


@pytest.fixture(scope="module")
def copycat(streams, server, tiny_model_dir, tmp_path_factory):
    """A third stream that claims the first stream's name, its first round run while the server is down
    (one training serves both tests below)."""
    tmp = tmp_path_factory.mktemp("copycat")
    owner = streams[0]
    taken = registered_model(owner, load_params(owner.params_file))
    ws = make_stream(tmp / "copycat", tiny_model_dir, server, registered_model=taken)
    ingest(ws, tmp, "one")
    server.stop()
    try:
        down = run(ws.root, BIN / "dvc", "repro", check=False)
        late_init = run(tmp, BIN / "continual", "init", str(tmp / "late"), "--tracking-uri", server.uri, check=False)
    finally:
        server.start()
    return {"ws": ws, "owner": owner, "taken": taken, "down": down, "late_init": late_init,
            "trained": (ws.round_dir("0001-one") / "metrics.json").stat().st_mtime_ns}


def test_a_server_outage_during_a_round_keeps_the_round_and_fails_only_the_logging(copycat, server):
    down = copycat["down"]
    assert down.returncode != 0 and rounds_run(down) == ["0001-one"]  # trained and kept
    assert f"MLflow at {server.uri} did not answer" in down.stderr and "only the track stage reruns" in down.stderr
    assert "round@0001-one" in yaml.safe_load((copycat["ws"].root / "dvc.lock").read_text())["stages"]
    init = copycat["late_init"]
    assert init.returncode == 1 and f"the MLflow tracking server {server.uri} did not answer" in init.stderr
    assert not (copycat["ws"].root.parent / "late").exists()


def test_a_stream_claiming_another_streams_name_is_refused_at_its_first_round(copycat, server):
    ws, owner, taken = copycat["ws"], copycat["owner"], copycat["taken"]
    refused = run(ws.root, BIN / "dvc", "repro", check=False)  # the server is back: the name is checked
    assert refused.returncode != 0 and rounds_run(refused) == []
    says = " ".join(refused.stderr.split())
    assert f"the registered model '{taken}' on {server.uri} belongs to another stream" in says
    assert f"workspace {owner.identity[:12]} at {owner.root}" in says
    assert "set tracking.registered_model in params.yaml to a name of this stream's own" in says
    client = MlflowClient(server.uri)
    assert len(client.search_model_versions(f"name = '{taken}'")) == 2  # the owner's two, nothing added
    assert str(client.get_model_version_by_alias(taken, "champion").version) == "2"
    assert lineage_runs(client, ws) == []

    params = yaml.safe_load(ws.params_file.read_text())
    params["tracking"]["registered_model"] = ""  # the fix the message gives: this workspace's own name
    ws.params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    fixed = run(ws.root, BIN / "dvc", "repro")
    assert rounds_run(fixed) == []  # the round trained during the outage is logged now, never retrained
    assert (ws.round_dir("0001-one") / "metrics.json").stat().st_mtime_ns == copycat["trained"]
    assert [r.info.run_name for r in lineage_runs(client, ws)] == ["0001-one"]
    own = f"continual-{ws.identity[:8]}"
    assert str(client.get_model_version_by_alias(own, "champion").version) == "1"


def test_a_stream_that_raced_another_to_its_first_version_refuses_its_own(streams, server, tiny_model_dir, tmp_path,
                                                                          monkeypatch):
    from round_folders import write_stream

    from continual.registry import register
    from continual.registry.lineage import log_round
    from continual.registry.model_name import NameTaken

    owner = streams[1]
    taken = registered_model(owner, load_params(owner.params_file))
    racer = write_stream(tmp_path / "racer", tiny_model_dir, [[0.7]], ["tweets"])
    params = load_params()
    params["tracking"]["registered_model"] = taken
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    checks = []
    real_check = register.refuse_if_owned_elsewhere

    def raced(*args):  # the owner's first version lands between the racer's check and its registration
        checks.append(args)
        if len(checks) > 1:
            real_check(*args)

    monkeypatch.setattr(register, "refuse_if_owned_elsewhere", raced)
    with pytest.raises(NameTaken, match=f"workspace {owner.identity[:12]}"):
        log_round(racer, "0001-tweets", params)
    client = MlflowClient(server.uri)
    newest = max(client.search_model_versions(f"name = '{taken}'"), key=lambda v: int(v.version))
    assert newest.tags["workspace"] == racer.identity[:12] and newest.tags["promotion.decision"] == "refused"
    assert str(client.get_model_version_by_alias(taken, "champion").version) == "2"  # the owner's, untouched
    (run,) = lineage_runs(client, racer)
    assert run.info.status == "FAILED" and "continual.round_hash" not in run.data.tags  # logged again after a rename


def test_two_first_track_stages_creating_the_experiment_at_once_both_go_on(streams, server, tmp_path, monkeypatch):
    from continual.registry.connect import connect
    from continual.registry.race_safe_client import RaceSafeClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    (experiment,) = MlflowClient(server.uri).search_experiments(filter_string="name = 'continual'")
    looked = []
    real_lookup = RaceSafeClient.get_experiment_by_name

    def not_yet(self, name):  # this stream looked before the other one created it
        looked.append(name)
        return None if len(looked) == 1 else real_lookup(self, name)

    monkeypatch.setattr(RaceSafeClient, "get_experiment_by_name", not_yet)
    ws = Workspace.at(tmp_path)
    assert connect(ws, load_params())[1] == experiment.experiment_id  # its create failed: it reads it
