"""The promotion gate (pure) and the champion alias it moves (real SQLite registry, no mocks)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from continual.params import load_params
from continual.registry.champion import ChampionMoved, current_champion, history, move, promote, rollback
from continual.registry.connect import connect
from continual.registry.gate import Gate, decide
from continual.registry.lineage import log_round
from continual.registry.lock import registry_lock
from continual.registry.model_name import NameTaken, registered_model
from continual.registry.round_folder import RoundFolder, find_round_run
from continual.registry.tags import MOVE_TAG
from continual.registry.track import promote_if_better, track
from continual.workspace.layout import Workspace
from round_folders import NAMES, write_stream

GATE = Gate(max_avg_acc_drop=0.02, max_forgetting=0.10, min_new_acc=0.40)


def candidate(acc: dict[str, float], forgetting: dict[str, float]) -> dict:
    key = list(acc)[-1]
    return {"key": key, "acc": acc, "avg_acc": sum(acc.values()) / len(acc), "forgetting": forgetting}


# -- the gate, pure -----------------------------------------------------------------------------------------
def test_gate_without_champion_accepts_a_model_that_did_not_forget():
    decision = decide(candidate({"a": 0.78, "b": 0.80}, {"a": 0.03}), None, GATE)
    assert decision.accepted
    assert len(decision.reasons) == 2 and all(r.startswith("ok: ") for r in decision.reasons)


def test_gate_refuses_a_model_that_forgot_more_than_the_bound():
    decision = decide(candidate({"a": 0.55, "b": 0.60, "c": 0.82}, {"a": 0.25, "b": 0.05}), None, GATE)
    assert not decision.accepted
    assert decision.reasons[1] == "refused: largest forgetting 0.250 (on a), bound 0.100"


def test_gate_lets_forgetting_of_exactly_the_bound_pass():
    assert decide(candidate({"a": 0.71, "b": 0.8}, {"a": 0.81 - 0.71}), None, GATE).accepted


def test_gate_refuses_a_new_arrival_below_the_floor():
    decision = decide(candidate({"a": 0.80, "b": 0.35}, {"a": 0.0}), None, GATE)
    assert not decision.accepted and decision.reasons[0].startswith("refused: accuracy on the new arrival b")


def test_gate_compares_average_accuracy_on_the_arrivals_both_were_measured_on():
    new = candidate({"a": 0.75, "b": 0.80}, {"a": 0.05})
    # The champion is the parent: its accuracy on b (acc_before_update 0.50) is known, so b counts.
    assert decide(new, {"a": 0.80, "b": 0.50}, GATE).accepted
    # Only a is common, and on it the candidate is 0.05 worse: more than the allowed drop.
    refused = decide(new, {"a": 0.80}, GATE)
    assert not refused.accepted
    assert refused.reasons[-1].startswith("refused: avg accuracy 0.750 against the champion's 0.800 on 1 common")


# -- the champion alias in a real registry -----------------------------------------------------------------
@pytest.fixture(autouse=True)
def local_store(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_gate_moves_the_champion_and_by_hand_moves_are_recorded(tmp_path, tiny_model_dir, capsys):
    # Round 2 forgets tweets (0.80 -> 0.55); round 3 recovers it.
    ws = write_stream(tmp_path / "ws", tiny_model_dir, [[0.80], [0.55, 0.82], [0.79, 0.78, 0.81]], NAMES)
    params = load_params(ws.params_file)
    decisions = {}
    for key in ws.stream():
        log_round(ws, key, params)
        decisions[key] = promote_if_better(ws, key, params)
    client, _ = connect(ws, params)
    name = registered_model(ws, params)

    def champion() -> str:
        return str(client.get_model_version_by_alias(name, "champion").version)

    assert decisions["0001-tweets"].accepted
    refused = decisions["0002-movies"]
    assert not refused.accepted
    assert "refused: largest forgetting 0.250 (on 0001-tweets), bound 0.100" in refused.reasons
    assert any("on 2 common arrivals" in r for r in refused.reasons)  # champion v1 is round 2's parent
    run = client.get_run(client.get_model_version(name, "2").run_id)
    assert run.data.tags["promotion.decision"] == "refused"
    assert "largest forgetting 0.250" in run.data.tags["promotion.reasons"]
    assert client.get_model_version(name, "2").tags["promotion.decision"] == "refused"
    assert decisions["0003-amazon"].accepted  # compared with v1 on tweets only: 0.79 against 0.80
    assert champion() == "3"
    assert client.get_registered_model(name).tags["champion.history"] == "1,3"
    assert "refused" in capsys.readouterr().out

    import mlflow

    served = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    predictions = served.predict(["what a lovely film", "this was awful"])
    assert list(predictions["label"]) and set(predictions["label"]) <= {"neg", "neu", "pos"}

    assert rollback(ws) == "1" and champion() == "1"
    assert "-> v1 (rollback)" in client.get_registered_model(name).tags["champion.last_move"]
    assert promote(ws, "0002-movies") == "2" and champion() == "2"
    assert client.get_model_version(name, "2").tags["champion.how"] == "by hand, round 0002-movies"
    assert f"champion: {name} v1 -> v2 (by hand, round 0002-movies)" in capsys.readouterr().out
    assert rollback(ws) == "1" and champion() == "1"
    with pytest.raises(RuntimeError, match="no earlier champion"):
        rollback(ws)


def logged_stream(root, model_dir, rows, register=True):
    """A workspace with a finished round folder per row, every round logged (no gate run yet)."""
    ws = write_stream(root, model_dir, rows, NAMES)
    params = load_params(ws.params_file)
    for key in ws.stream():
        log_round(ws, key, params)
    client, _ = connect(ws, params)
    return ws, params, client, registered_model(ws, params)


def champion_of(client, name) -> str | None:
    found = current_champion(client, name)
    return None if found is None else str(found.version)


def test_track_gates_the_newest_round_once_and_never_undoes_a_move_by_hand(tmp_path, tiny_model_dir, capsys):
    ws = write_stream(tmp_path / "ws", tiny_model_dir, [[0.80], [0.81, 0.70], [0.80, 0.72, 0.75]], NAMES)
    params = load_params(ws.params_file)
    log_round(ws, "0001-tweets", params)
    assert promote_if_better(ws, "0001-tweets", params).accepted  # champion v1
    # Rounds 2 and 3 came back from DVC's run cache, or were trained while MLflow was down: never logged.
    decision = track(ws, params)

    client, experiment_id = connect(ws, params)
    name = registered_model(ws, params)
    champion = client.get_model_version_by_alias(name, "champion")
    assert decision.accepted and client.get_run(champion.run_id).info.run_name == "0003-amazon"
    middle = client.get_run(find_round_run(client, experiment_id, ws, RoundFolder.read(ws, "0002-movies")))
    assert "promotion.decision" not in middle.data.tags  # round 2 never competed with round 3
    assert client.get_registered_model(name).tags["champion.history"] == "1,3"

    assert rollback(ws) == "1"  # by hand: the next dvc repro must not undo it
    capsys.readouterr()
    assert track(ws, params) is None and champion_of(client, name) == "1"
    assert "was gated before: accepted" in capsys.readouterr().out


def test_reading_the_registry_fails_loudly_and_is_never_taken_for_no_champion(tmp_path, tiny_model_dir, monkeypatch):
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from serving import free_port

    ws, params, client, name = logged_stream(tmp_path / "ws", tiny_model_dir, [[0.8]])
    assert champion_of(client, name) is None  # the model exists, the alias does not: no champion
    assert current_champion(client, "no-such-model") is None  # no registered model: no champion
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    dead = MlflowClient(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(MlflowException):
        current_champion(dead, name)  # an outage is not "no champion yet"
    with pytest.raises(MlflowException):
        history(dead, name)


def test_a_move_is_refused_when_the_alias_moved_since_the_decision(tmp_path, tiny_model_dir):
    ws, params, client, name = logged_stream(tmp_path / "ws", tiny_model_dir, [[0.8], [0.8, 0.8], [0.8, 0.8, 0.8]])
    assert promote(ws, "0001-tweets") == "1"
    seen = current_champion(client, name)  # what a decision saw: v1
    client.set_registered_model_alias(name, "champion", "2")  # meanwhile, someone else moves it
    before = dict(client.get_registered_model(name).tags)
    with pytest.raises(ChampionMoved, match="champion is v2 now, not v1"):
        move(client, ws, name, "3", seen, "gate, round 0003-amazon", "gate")
    assert champion_of(client, name) == "2" and dict(client.get_registered_model(name).tags) == before


def test_a_writer_that_loses_the_race_to_create_the_first_champion_is_refused(tmp_path, tiny_model_dir,
                                                                             monkeypatch):
    # MLflow's SQL store writes an alias as SELECT-then-INSERT: two first promotions at once both INSERT, and
    # the loser gets an IntegrityError (CI, stop 16). Replay it: the other writer's INSERT lands in between.
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    ws, params, client, name = logged_stream(tmp_path / "ws", tiny_model_dir, [[0.8], [0.8, 0.8]])
    real = MlflowClient.set_registered_model_alias

    def raced(self, model, alias, version):
        real(self, model, alias, "2")  # the other process's INSERT wins
        raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: registered_model_aliases")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", raced)
    before = dict(client.get_registered_model(name).tags)
    with pytest.raises(ChampionMoved, match="another process set the champion to v2"):
        move(client, ws, name, "1", None, "gate, round 0001-tweets", "gate")
    assert champion_of(client, name) == "2" and dict(client.get_registered_model(name).tags) == before
    monkeypatch.setattr(MlflowClient, "set_registered_model_alias",
                        lambda *a: (_ for _ in ()).throw(MlflowException("disk I/O error")))
    with pytest.raises(MlflowException, match="disk I/O"):  # a failure that moved nothing is not a race
        move(client, ws, name, "1", current_champion(client, name), "gate", "gate")


def test_history_written_by_a_former_release_is_kept_and_rolled_back_through(tmp_path, tiny_model_dir):
    ws, params, client, name = logged_stream(tmp_path / "ws", tiny_model_dir, [[0.8], [0.8, 0.8]])
    client.set_registered_model_alias(name, "champion", "2")
    client.set_registered_model_tag(name, "champion.history", "1,2")  # a former release's one-tag history
    assert rollback(ws) == "1" and champion_of(client, name) == "1"
    tags = client.get_registered_model(name).tags
    (move,) = [json.loads(v) for k, v in tags.items() if k.startswith(MOVE_TAG)]
    assert move["base"] == ["1", "2"] and (move["kind"], move["from"], move["to"]) == ("rollback", "2", "1")
    assert tags["champion.history"] == "1"
    with pytest.raises(RuntimeError, match="no earlier champion"):
        rollback(ws)


CONCURRENT = """
import sys
from continual.registry.champion import ChampionMoved, promote, rollback
from continual.workspace.layout import Workspace
ws, keys = Workspace.at(sys.argv[1]), sys.argv[2].split(",")
for i in range(6):
    try:
        if i % 3 == 2:
            rollback(ws)
        else:
            promote(ws, keys[i % 2])
    except (ChampionMoved, RuntimeError) as refused:
        print("REFUSED", refused)
"""


def test_concurrent_promotes_and_rollbacks_from_two_clones_lose_no_history(tmp_path, tiny_model_dir, monkeypatch):
    # Two clones of one workspace (same id, separate lock files) on one store: nothing serialises them
    # but the compare-and-set and the per-move history tags.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'shared.db'}")
    monkeypatch.chdir(tmp_path)
    ws, params, client, name = logged_stream(tmp_path / "ws", tiny_model_dir, [[0.8], [0.8, 0.8], [0.8, 0.8, 0.8]])
    clone = tmp_path / "clone"
    shutil.copytree(ws.root, clone)
    assert Workspace.at(clone).identity == ws.identity
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(root), keys], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for root, keys in ((ws.root, "0001-tweets,0002-movies"), (clone, "0003-amazon,0002-movies"))]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    moved = [line for out, _ in outs for line in out.splitlines() if line.startswith(f"champion: {name} v") and " -> v" in line]
    tags = client.get_registered_model(name).tags
    moves = [json.loads(tags[k]) for k in sorted(tags) if k.startswith(MOVE_TAG)]
    assert len(moves) == len(moved) >= 4  # every move that happened is recorded, none overwritten
    raced = any("at the same moment" in out for out, _ in outs)  # two alias writes inside one CAS window
    assert raced or history(client, name)[-1] == champion_of(client, name)
    assert tags["champion.history"].split(",")[-1] in {"1", "2", "3"}


def test_registry_changes_in_one_workspace_wait_for_each_other(tmp_path, tiny_model_dir):
    ws, params, client, name = logged_stream(tmp_path / "ws", tiny_model_dir, [[0.8], [0.8, 0.8]])
    promote(ws, "0001-tweets")
    promote(ws, "0002-movies")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    with registry_lock(ws):
        proc = subprocess.Popen([sys.executable, "-m", "continual.cli", "-C", str(ws.root), "rollback"], env=env,
                                text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert "waiting for another registry change" in proc.stdout.readline()  # it reached the lock
        time.sleep(1)
        assert proc.poll() is None and champion_of(client, name) == "2"
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert "-> v1 (rollback)" in out and champion_of(client, name) == "1"


def test_a_name_another_workspace_owns_is_refused_and_the_gate_never_takes_its_alias(tmp_path, tiny_model_dir,
                                                                                   monkeypatch, capsys):
    # Two workspaces, one server, one name set by hand in both: the second is refused before it logs anything.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'shared.db'}")
    monkeypatch.chdir(tmp_path)
    params = load_params()
    params["tracking"]["registered_model"] = name = "shared"
    first = write_stream(tmp_path / "first", tiny_model_dir, [[0.6]], NAMES)
    log_round(first, "0001-tweets", params)
    assert promote_if_better(first, "0001-tweets", params).accepted
    second = write_stream(tmp_path / "second", tiny_model_dir, [[0.9]], NAMES)
    second.params_file.write_text(f"tracking:\n  registered_model: {name}\n")  # what `continual promote` reads
    owner = f"workspace {first.identity[:12]} at {first.root}"
    with pytest.raises(NameTaken, match=re.escape(owner) + ".*set tracking.registered_model in params.yaml"):
        track(second, params)
    client, experiment_id = connect(second, params)
    assert [str(v.version) for v in client.search_model_versions(f"name = '{name}'")] == ["1"]
    assert len(client.search_runs([experiment_id], "")) == 2  # the first's lineage and round runs only

    # A registry from before that check holds both workspaces' versions: the first champion keeps the alias.
    monkeypatch.setattr("continual.registry.register.refuse_if_owned_elsewhere", lambda *args: None)
    log_round(second, "0001-tweets", params)
    decision = promote_if_better(second, "0001-tweets", params)
    assert not decision.accepted and champion_of(client, name) == "1"
    assert f"trained in another workspace ({first.identity[:12]})" in decision.reasons[-1]
    assert promote(second, "0001-tweets") == "2"  # by hand it may, and says so
    assert "taking the alias from v1, trained in another workspace" in capsys.readouterr().out


def test_the_track_stage_connects_to_the_store_once(tmp_path, tiny_model_dir, monkeypatch):
    ws = write_stream(tmp_path / "ws", tiny_model_dir, [[0.8], [0.8, 0.8]], NAMES)
    calls = []
    monkeypatch.setattr("continual.registry.connect.connect", lambda *args: calls.append(args) or connect(*args))
    assert track(ws, load_params(ws.params_file)).accepted  # logs both rounds, then gates the newest
    assert len(calls) == 1


def test_a_dvc_experiment_logs_and_judges_but_never_moves_the_alias(tmp_path, tiny_model_dir, monkeypatch, capsys):
    ws, params, client, name = logged_stream(tmp_path / "ws", tiny_model_dir, [[0.8]])
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "0123456789abcdef")
    monkeypatch.setenv("DVC_EXP_NAME", "bushy-ruff")
    decision = track(ws, params)
    assert decision.accepted and "DVC experiment bushy-ruff" in decision.skipped
    assert champion_of(client, name) is None
    version = client.get_model_version(name, "1")
    assert "promotion.decision" not in version.tags
    assert version.tags["promotion.skipped"].startswith("accepted, not applied: DVC experiment bushy-ruff")
    assert "promotion: skipped, the alias stays where it is" in capsys.readouterr().out

    # Back in a plain `dvc repro`: an experiment's round is not gated while its params are not committed...
    monkeypatch.delenv("DVC_EXP_BASELINE_REV")
    monkeypatch.delenv("DVC_EXP_NAME")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(git + ["init", "-q"], cwd=ws.root, check=True)
    assert track(ws, params) is None and champion_of(client, name) is None
    assert "was trained in a DVC experiment" in capsys.readouterr().out
    # ...and is, once they are (the experiment applied and committed on the branch).
    shutil.copyfile(Path(__file__).parents[1] / "params.yaml", ws.params_file)
    (ws.root / "dvc.lock").write_text("schema: '2.0'\n")
    subprocess.run(git + ["add", "params.yaml", "dvc.lock", "stream.yaml"], cwd=ws.root, check=True)
    subprocess.run(git + ["commit", "-qm", "apply the experiment"], cwd=ws.root, check=True)
    assert track(ws, params).accepted and champion_of(client, name) == "1"


def test_a_tag_write_that_loses_an_insert_race_is_written_again(tmp_path, tiny_model_dir, monkeypatch):
    # Two gates tagging one version at once both INSERT the tag row (CI, stop 16); the loser writes again.
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from continual.registry.race_safe_client import RaceSafeClient

    ws, params, client, name = logged_stream(tmp_path / "ws", tiny_model_dir, [[0.8]])
    assert isinstance(client, RaceSafeClient)
    real, calls = MlflowClient.set_model_version_tag, []

    def raced(self, *args):
        calls.append(args)
        if len(calls) == 1:
            real(self, name, "1", "serving.int8", "the other writer")
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: model_version_tags.key")
        return real(self, *args)

    monkeypatch.setattr(MlflowClient, "set_model_version_tag", raced)
    client.set_model_version_tag(name, "1", "serving.int8", "this writer")
    assert len(calls) == 2 and client.get_model_version(name, "1").tags["serving.int8"] == "this writer"
    monkeypatch.setattr(MlflowClient, "set_model_version_tag",
                        lambda *a: (_ for _ in ()).throw(MlflowException("disk I/O error")))
    with pytest.raises(MlflowException, match="disk I/O"):  # any other failure is raised at once
        client.set_model_version_tag(name, "1", "serving.int8", "x")
