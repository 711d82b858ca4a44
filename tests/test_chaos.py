"""Issue 10, "never stuck, nothing lost, nothing wrongly promoted": the parts of the chaos suite
(benchmarks/chaos.py) that fit in `make test`, and a regression test for each defect it found."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file
from helpers import BIN, make_workspace, run, snapshot

from continual import cli

from continual.arrivals import journal, verify
from continual.arrivals.split import read_split
from continual.registry.model_name import registered_model
from continual.params import load_params
from continual.strategies import RoundContext, make_strategy
from continual.workspace.layout import Workspace

HOSTILE = Path(__file__).resolve().parent / "fixtures" / "hostile"


def _load_make():
    spec = importlib.util.spec_from_file_location("hostile_make", HOSTILE / "make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAKE = _load_make()
CASES = MAKE.load_manifest()
REFUSED = [case for case in CASES if case["expect"] == "refuse"]
# The 50 MB file is benchmarks/chaos.py's (its peak memory is a figure there); every other accepted case runs here.
ACCEPTED = [case for case in CASES if case["expect"] == "accept" and case["file"] != "big-50mb.csv"]


def case_id(case: dict) -> str:
    return case["file"] if case["name"] == MAKE.arrival_name(case["file"]) else f"{case['file']}--name={case['name']!r}"


def fixture_path(case: dict, runtime: Path) -> Path:
    return MAKE.runtime_fixture(case, runtime) if case.get("runtime") else HOSTILE / case["file"]


def ingest_cli(capsys, ws: Workspace, path: Path, name: str) -> tuple[int, str, str]:
    code = cli.main(["-C", str(ws.root), "ingest", str(path), f"--name={name}"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- hostile arrivals ------------------------------------------------------------------------------------


def test_the_committed_fixtures_are_what_make_py_writes():
    MAKE.build()
    assert MAKE.ENTRIES == CASES, "manifest.json is stale: run python tests/fixtures/hostile/make.py"
    for name, data in MAKE.FILES.items():
        assert (HOSTILE / name).read_bytes() == data, f"{name} is stale: run python tests/fixtures/hostile/make.py"
    assert len({case["file"] for case in CASES}) >= 60


@pytest.fixture(scope="module")
def refusing_workspace(tmp_path_factory) -> Workspace:
    return make_workspace(tmp_path_factory.mktemp("refusals") / "ws")


@pytest.mark.parametrize("case", REFUSED, ids=case_id)
def test_a_hostile_file_is_refused_naming_file_and_line_and_changes_nothing(case, refusing_workspace, tmp_path,
                                                                           capsys):
    ws = refusing_workspace
    path = fixture_path(case, tmp_path)
    before = snapshot(ws.root)  # every file, .git and .dvc included
    code, _, err = ingest_cli(capsys, ws, path, case["name"])
    assert code == 1, err
    assert err.startswith("continual ingest: error: ") and "Traceback" not in err
    assert str(path) in err and case["message"] in err, err
    if case["line"] is not None:
        assert f": line {case['line']}: " in err, err
    assert snapshot(ws.root) == before


@pytest.fixture(scope="module")
def accepting_workspace(tmp_path_factory) -> Workspace:
    return make_workspace(tmp_path_factory.mktemp("acceptances") / "ws")


@pytest.mark.parametrize("case", ACCEPTED, ids=case_id)
def test_a_hostile_file_that_is_accepted_is_stored_whole(case, accepting_workspace, tmp_path, capsys, monkeypatch):
    """Every accepted case in one stream (each text names its fixture, so none is a duplicate of another's).
    `dvc add` and `git add` are stubbed: they see only the normalised arrival folder, whatever the source
    held, and test_trains_two_further_rounds_after_a_hostile_arrival runs them for real."""
    monkeypatch.setattr(journal, "run_command", lambda cmd, cwd: None)
    ws = accepting_workspace
    code, out, err = ingest_cli(capsys, ws, fixture_path(case, tmp_path), case["name"])
    assert code == 0, err
    key = ws.stream()[-1]
    assert key.endswith(case["name"])
    texts = [row["text"] for split in ("train", "test") for row in read_split(ws, key, split)]
    assert len(texts) == case["rows"]  # no text split at a separator, none dropped
    assert MAKE.texts_hash(texts) == case["texts_sha256"]  # and each stored exactly as ingest promises
    assert case["warns"] in out


def clean_arrival(path: Path, salt: str) -> Path:
    rows = ["text,label"] + [f"{word} {salt} number {i},{label}" for label, word in (("neg", "awful"), ("pos", "lovely"))
                             for i in range(8)]
    path.write_text("\n".join(rows) + "\n")
    return path


def tiny_workspace(root: Path, model_dir: Path) -> Path:
    run(root.parent, BIN / "continual", "init", root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["model"].update(base=str(model_dir), max_length=32)
    params["train"].update(epochs=1, batch_size=16)
    params["strategy"].update(name="replay+ewc")  # the hostile texts must survive the replay buffer
    params["strategy"]["replay"]["mem_size"] = 20
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))
    return root


@pytest.mark.slow
def test_trains_two_further_rounds_after_a_hostile_arrival(tmp_path, tiny_model_dir):
    """The shared follow-up check: the file holding every accepted hazard (separators, controls, NUL, emoji,
    bidi, zero-width, a 20,000-character text, unicode labels with spaces, labels differing in case), then
    two clean arrivals, all trained by one `dvc repro` with replay+ewc. benchmarks/chaos.py does this for
    every accepted fixture."""
    root = tiny_workspace(tmp_path / "ws", tiny_model_dir)
    run(root, BIN / "continual", "ingest", HOSTILE / "kitchen-sink.jsonl", "--name", "kitchen-sink")
    for salt in ("one", "two"):
        run(root, BIN / "continual", "ingest", clean_arrival(tmp_path / f"{salt}.csv", salt), "--name", salt)
    result = run(root, BIN / "dvc", "repro")
    keys = ["0001-kitchen-sink", "0002-one", "0003-two"]
    assert [line.split("'")[1] for line in result.stdout.splitlines()
            if line.startswith("Running stage 'round@")] == [f"round@{key}" for key in keys]
    buffer = [json.loads(line) for line in (root / "rounds" / keys[-1] / "buffer.jsonl").read_text().split("\n") if line]
    kitchen = {row["text"] for split in ("train", "test") for row in read_split(Workspace.at(root), keys[0], split)}
    assert any(row["text"] in kitchen for row in buffer)  # hostile texts replayed intact two rounds later
    labels = json.loads((root / "rounds" / keys[-1] / "model" / "classifier.json").read_text())["labels"]
    assert {"tr\u00e8s bien", "\u8d1f\u9762 \U0001F621", "Neutral", "neutral", "neg", "pos"} == set(labels)
    status = run(root, BIN / "continual", "status")
    assert "not trained yet" not in status.stdout and all(key in status.stdout for key in keys)

    # DVC's own damage: a `dvc repro` killed while "Updating lock file" leaves dvc.lock empty, and every dvc
    # command fails. `continual status` names the repair; after it nothing is retrained.
    trained = {key: (root / "rounds" / key / "metrics.json").read_bytes() for key in keys}
    (root / "dvc.lock").write_text("")
    assert run(root, BIN / "dvc", "repro", check=False).returncode != 0
    status = run(root, BIN / "continual", "status")
    assert "dvc.lock is damaged (empty)" in status.stdout
    assert "repair: run `continual repair`, then `dvc repro`" in status.stdout
    run(root, BIN / "continual", "repair")
    again = run(root, BIN / "dvc", "repro")
    assert "Running stage 'round@" not in again.stdout and again.stdout.count("is cached - skipping run") == 3
    assert {key: (root / "rounds" / key / "metrics.json").read_bytes() for key in keys} == trained


# -- regressions found by the chaos suite -----------------------------------------------------------------


def test_jsonl_nested_too_deeply_is_a_refusal_naming_the_line_not_a_recursion_error(tmp_path):
    from continual.arrivals.jsonl import JsonlError, parse_lines

    text = '{"text": "a", "label": "b"}\n' + "[" * 100_000 + "]" * 100_000 + "\n"
    with pytest.raises(JsonlError, match="line 2: not valid JSON here: nested too deeply"):
        list(parse_lines(text, tmp_path / "deep.jsonl"))


def _ingest_killed_at(ws: Workspace, source: Path, name: str, step: str) -> subprocess.CompletedProcess:
    """`continual ingest` in a child process that SIGKILLs itself right after `dvc add` ("after-dvc-add") or
    right before `git add` ("before-git-add"): no undo runs, as after kill -9."""
    code = (
        "import os, signal, sys\n"
        "from continual import cli\n"
        "from continual.arrivals import journal\n"
        "real = journal.run_command\n"
        "def run(cmd, cwd):\n"
        f"    if {step!r} == 'before-git-add' and cmd[0] == 'git':\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    real(cmd, cwd)\n"
        f"    if {step!r} == 'after-dvc-add' and 'add' in cmd and cmd[0] != 'git':\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "journal.run_command = run\n"
        "sys.exit(cli.main(sys.argv[1:]))\n"
    )
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-c", code, "-C", str(ws.root), "ingest", str(source), "--name", name],
                          capture_output=True, text=True, env=env)


def test_an_ingest_killed_half_way_blocks_nothing_and_is_rolled_back(tmp_path, capsys):
    ws = make_workspace(tmp_path / "ws")
    source = clean_arrival(tmp_path / "one.csv", "one")
    before = snapshot(ws.root)
    assert _ingest_killed_at(ws, source, "one", "after-dvc-add").returncode == -9
    assert ws.arrival_dir("0001-one").is_dir() and ws.stream() == []  # half registered
    assert (ws.root / ".continual" / "ingest-journal.json").exists()

    verify.verify_arrivals(ws)  # dvc repro's first stage is not blocked by it (it says so)
    assert "an ingest of 0001-one was killed half way" in capsys.readouterr().err  # its .dvc file exists: kept
    assert cli.main(["-C", str(ws.root), "status"]) == 0
    out = capsys.readouterr().out
    assert "an ingest of 0001-one (from " in out and "repair: run `continual repair`, then `dvc repro`" in out

    assert cli.main(["-C", str(ws.root), "repair"]) == 0
    assert "repaired: rolled back 0001-one" in capsys.readouterr().out
    after = snapshot(ws.root, skip=(".dvc/cache", ".dvc/tmp", ".continual"))
    assert after == {k: v for k, v in before.items() if not k.startswith((".dvc/cache", ".dvc/tmp"))}

    assert _ingest_killed_at(ws, source, "one", "after-dvc-add").returncode == -9
    ws.arrival_dvc_file("0001-one").unlink()  # as when the kill lands inside `dvc add`, before it wrote it
    verify.verify_arrivals(ws)  # then dvc repro's first stage rolls it back itself
    assert "continual verify: rolled back 0001-one" in capsys.readouterr().err
    assert not ws.arrival_dir("0001-one").exists() and not (ws.root / ".continual" / "ingest-journal.json").exists()

    assert _ingest_killed_at(ws, source, "one", "after-dvc-add").returncode == -9
    code, out, err = ingest_cli(capsys, ws, source, "one")  # the user's retry: rolls back, then ingests
    assert code == 0 and "rolled back 0001-one" in err and ws.stream() == ["0001-one"]
    assert not (ws.root / ".continual" / "ingest-journal.json").exists()
    verify.verify_arrivals(ws)


def test_an_ingest_killed_after_registering_is_finished_not_undone(tmp_path, capsys):
    ws = make_workspace(tmp_path / "ws")
    source = clean_arrival(tmp_path / "one.csv", "one")
    assert _ingest_killed_at(ws, source, "one", "before-git-add").returncode == -9
    assert ws.stream() == ["0001-one"]  # stream.yaml was written: the arrival is registered
    (ws.root / ".git" / "index.lock").touch()  # as a `git add` killed with it leaves: every git add fails
    assert "data/arrivals/0001-one.dvc" not in subprocess.run(["git", "ls-files"], cwd=ws.root, capture_output=True,
                                                               text=True).stdout
    code, _, err = ingest_cli(capsys, ws, clean_arrival(tmp_path / "two.csv", "two"), "two")
    assert code == 0 and "finished registering 0001-one" in err
    staged = subprocess.run(["git", "ls-files"], cwd=ws.root, capture_output=True, text=True).stdout.split()
    assert {"data/arrivals/0001-one.dvc", "data/arrivals/0002-two.dvc", "stream.yaml"} <= set(staged)
    assert not (ws.root / ".git" / "index.lock").exists()


def test_an_ingest_refused_by_dvc_because_of_crash_damage_says_how_to_repair(tmp_path, capsys):
    ws = make_workspace(tmp_path / "ws")
    (ws.root / "dvc.lock").write_text("")  # a `dvc repro` killed while rewriting it
    before = snapshot(ws.root, skip=(".dvc/tmp",))
    code, _, err = ingest_cli(capsys, ws, clean_arrival(tmp_path / "one.csv", "one"), "one")
    assert code == 1 and "dvc.lock' validation failed" in err
    assert "dvc.lock is damaged (empty)" in err and "repair: run `continual repair`, then `dvc repro`" in err
    assert snapshot(ws.root, skip=(".dvc/tmp",)) == before  # rolled back, journal included
    assert cli.main(["-C", str(ws.root), "repair"]) == 0
    capsys.readouterr()
    code, _, err = ingest_cli(capsys, ws, clean_arrival(tmp_path / "one.csv", "one"), "one")
    assert code == 0, err


def _fake_round(ws: Workspace, key: str, salt: str) -> None:
    folder = ws.round_dir(key)
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "weights.bin").write_bytes(salt.encode() * 100)
    (folder / "metrics.json").write_text(json.dumps({"salt": salt}))
    (folder / "round.json").write_text(json.dumps({"key": key}))
    ws.metrics_dir.mkdir(exist_ok=True)
    ws.round_metrics_file(key).write_text(json.dumps({"avg_acc": 0.5}))


def test_a_round_finished_before_dvc_recorded_it_is_restored_not_retrained(tmp_path):
    from continual.workspace import finished_round, hashes
    ws = Workspace.at(tmp_path)
    ws.stream_file.write_text(ws.stream_text(["0001-a"]))
    ws.arrival_dir("0001-a").mkdir(parents=True)
    (ws.arrival_dir("0001-a") / "train.jsonl").write_text('{"text": "x", "label": "y"}\n')
    params = load_params()
    inputs = ws.round_inputs("0001-a", params)
    _fake_round(ws, "0001-a", "trained")
    finished_round.keep_finished_round(ws, "0001-a", inputs)
    kept = snapshot(ws.round_dir("0001-a"))
    output_hash = hashes.dir_hash(ws.round_dir("0001-a"))

    # dvc was killed before recording the round; the next `dvc repro` deletes the outputs and runs the stage:
    import shutil

    shutil.rmtree(ws.round_dir("0001-a"))
    ws.round_metrics_file("0001-a").unlink()
    assert finished_round.restore_finished_round(ws, "0001-a", inputs)
    assert snapshot(ws.round_dir("0001-a")) == kept and ws.round_metrics_file("0001-a").exists()

    # other inputs (an edited arrival, other params): trained
    shutil.rmtree(ws.round_dir("0001-a"))
    edited = {**inputs, "data_hash": "other.dir"}
    assert not finished_round.restore_finished_round(ws, "0001-a", edited)
    params["train"]["lr"] = 0.5
    assert not finished_round.restore_finished_round(ws, "0001-a", ws.round_inputs("0001-a", params))
    # dvc recorded exactly this output and runs the stage anyway (`dvc repro -f`): trained
    (ws.root / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"round@0001-a": {
        "cmd": "continual round 0001-a", "outs": [{"path": "rounds/0001-a", "md5": output_hash}]}}}))
    assert not finished_round.restore_finished_round(ws, "0001-a", inputs)
    (ws.root / "dvc.lock").unlink()
    assert finished_round.restore_finished_round(ws, "0001-a", inputs)


def test_a_round_folder_half_written_by_a_killed_round_is_cleaned(tmp_path):
    from continual.workspace import repair
    ws = Workspace.at(tmp_path)
    dead = ws.rounds_dir / ".0001-a.tmp-999999999"  # no such pid
    live = ws.rounds_dir / f".0001-a.tmp-{os.getpid()}"
    dead.mkdir(parents=True)
    live.mkdir()
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # exits, and is not reaped until wait()
    for _ in range(200):
        if __import__("psutil").Process(zombie.pid).status() == "zombie":
            break
        __import__("time").sleep(0.05)
    killed = ws.rounds_dir / f".0001-a.tmp-{zombie.pid}"  # its killer's parent was killed too: nobody reaps it
    killed.mkdir()
    try:
        assert sorted(repair.dead_round_temps(ws)) == sorted([dead, killed])
        assert any("a round folder whose writer was killed" in line for line in repair.crash_damage(ws))
        repair.repair(ws)
        assert not dead.exists() and not killed.exists() and live.exists()
    finally:
        zombie.wait()


@pytest.mark.parametrize("damage", ["", "schema: '2.0'\nstages:\n  verify:\n    cm", "schema: '2.0'\nstages: {ver"])
def test_a_dvc_lock_cut_short_by_a_kill_is_found_and_moved_aside(tmp_path, damage):
    from continual.workspace import repair
    ws = Workspace.at(tmp_path)
    (ws.root / "dvc.lock").write_text(damage)
    (ws.root / ".dvc" / "tmp").mkdir(parents=True)
    (ws.root / ".dvc" / "tmp" / "rwlock").write_text('{"read": {"a": [{"pid"')
    found = repair.crash_damage(ws)
    assert any(line.startswith("dvc.lock is damaged") for line in found)
    assert any(line.startswith(".dvc/tmp/rwlock is damaged") for line in found)
    done = repair.repair(ws)
    assert not (ws.root / "dvc.lock").exists() and not (ws.root / ".dvc" / "tmp" / "rwlock").exists()
    assert len(done) == 2 and repair.crash_damage(ws) == []
    # A killed `dvc repro` leaves its entries behind; a reused pid would then block the next command.
    (ws.root / ".dvc" / "tmp" / "rwlock").write_text(json.dumps({"read": {
        "params.yaml": [{"pid": 999999999, "cmd": "dvc repro"}], "rounds/0001-a": [{"pid": 1, "cmd": "dvc repro"}]},
        "write": {"rounds/0002-b": {"pid": 999999998, "cmd": "dvc repro"}}}))
    assert any("holds 3 entries of dvc processes that were killed" in line for line in repair.crash_damage(ws))
    assert any("dropped 3 entries" in line for line in repair.repair(ws))
    assert json.loads((ws.root / ".dvc" / "tmp" / "rwlock").read_text()) == {"read": {}, "write": {}}
    # Cut between two stages, the file is still one DVC reads (the missing stages rerun or come from the run
    # cache): not damage.
    (ws.root / "dvc.lock").write_text("schema: '2.0'\nstages:\n  verify:\n    cmd: continual verify\n")
    assert repair.crash_damage(ws) == []


def test_a_track_stage_killed_half_way_leaves_no_running_run_and_no_ungated_version(tmp_path, tiny_model_dir,
                                                                                   monkeypatch):
    import mlflow
    from round_folders import ROWS, write_stream

    from continual.registry.connect import connect
    from continual.registry.lineage import log_round
    from continual.registry.register import log_pooled_model
    from continual.registry.round_folder import RoundFolder, find_round_run, lineage
    from continual.registry.tags import ABANDONED_TAG, KIND_TAG, LINEAGE_TAG
    from continual.registry.track import track
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ws = write_stream(tmp_path / "ws", tiny_model_dir, ROWS[:2], ["tweets", "movies"])
    params = load_params(ws.params_file)
    log_round(ws, "0001-tweets", params)
    client, experiment_id = connect(ws, params)
    name = registered_model(ws, params)
    # What a kill leaves in the middle of _log: round 2's run RUNNING, its model registered, no round hash.
    folder = RoundFolder.read(ws, "0002-movies")
    line = lineage(ws, folder.info)
    run_id = client.create_run(experiment_id, run_name="0002-movies", tags={
        KIND_TAG: "round", LINEAGE_TAG: line, "continual.round_key": "0002-movies"}).info.run_id
    with mlflow.start_run(run_id=run_id):
        killed = log_pooled_model(folder.path / "model", registered_model_name=name)
    client.update_run(run_id, status="RUNNING")  # as SIGKILL leaves it: the with-block never ended
    lineage_run = client.create_run(experiment_id, run_name="half-made lineage", tags={
        KIND_TAG: "lineage", LINEAGE_TAG: line.replace(line.split(":")[1], "0" * 12)}).info.run_id

    track(ws, params)  # the next dvc repro's track stage

    assert client.get_run(run_id).info.status == "FAILED"
    assert "abandoned" in client.get_run(run_id).data.tags[ABANDONED_TAG]
    assert client.get_run(lineage_run).info.status == "FINISHED"
    orphan = client.get_model_version(name, killed.registered_model_version)
    assert orphan.tags["promotion.decision"] == "refused" and "abandoned" in orphan.tags["promotion.reasons"]
    versions = client.search_model_versions(f"name = '{name}'")
    assert all("promotion.decision" in v.tags for v in versions if str(v.version) != "1")  # v1: before any gate
    assert not client.search_runs([experiment_id], "attributes.status = 'RUNNING'")
    logged = find_round_run(client, experiment_id, ws, folder)
    assert logged and logged != run_id  # logged again, once
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.run_id == logged


def test_an_arrival_ingested_during_repro_does_not_leave_the_trained_round_ungated(tmp_path, tiny_model_dir,
                                                                                  monkeypatch, capsys):
    from round_folders import ROWS, write_stream

    from continual.registry.connect import connect
    from continual.registry.track import track
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ws = write_stream(tmp_path / "ws", tiny_model_dir, ROWS[:1], ["tweets"])
    ws.stream_file.write_text(ws.stream_text(["0001-tweets", "0002-movies"]))  # ingested while the round trained
    params = load_params(ws.params_file)
    decision = track(ws, params)
    assert decision is not None and decision.accepted
    assert "round 0002-movies has not run yet; gating the newest round that has, 0001-tweets" in capsys.readouterr().out
    client, _ = connect(ws, params)
    assert str(client.get_model_version_by_alias(registered_model(ws, params), "champion").version) == "1"


def test_a_gate_killed_after_moving_the_alias_records_the_move_when_it_reruns(tmp_path, tiny_model_dir,
                                                                             monkeypatch, capsys):
    from round_folders import ROWS, write_round, write_stream

    from continual.registry.champion import history, rollback
    from continual.registry.connect import connect
    from continual.registry.track import track
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    ws = write_stream(tmp_path / "ws", tiny_model_dir, ROWS[:1], ["tweets"])
    params = load_params(ws.params_file)
    track(ws, params)  # v1 champion, its move recorded
    ws.stream_file.write_text(ws.stream_text(["0001-tweets", "0002-movies"]))
    write_round(ws, ["0001-tweets", "0002-movies"], 1, ROWS, tiny_model_dir,
                {k: params[k] for k in ("seed", "model", "train", "strategy")})
    client, _ = connect(ws, params)
    name = registered_model(ws, params)

    def killed(*args, **kwargs):  # the kill lands right after the alias moved: no record, no decision
        raise KeyboardInterrupt

    monkeypatch.setattr(type(client), "set_registered_model_tag", killed)
    with pytest.raises(KeyboardInterrupt):
        track(ws, params)
    monkeypatch.undo()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert client.get_model_version_by_alias(name, "champion").version == 2  # moved, unrecorded
    assert history(client, name) == ["1"]

    capsys.readouterr()
    track(ws, params)  # the next dvc repro
    assert "its move was not recorded (interrupted): recorded now" in capsys.readouterr().out
    assert history(client, name) == ["1", "2"]
    assert client.get_model_version(name, "2").tags["promotion.decision"] == "accepted"
    assert rollback(ws) == "1"


def test_round_params_are_the_round_stages(tmp_path):
    from continual.workspace import layout
    from continual.rounds.round import ROUND_PARAMS

    stages = yaml.safe_load((Path(__file__).resolve().parents[1] / "continual" / "template" / "dvc.yaml").read_text())
    assert layout.ROUND_PARAMS == ROUND_PARAMS == tuple(stages["stages"]["round"]["do"]["params"])


@pytest.fixture(scope="module")
def service_client(tiny_model_dir):
    from service import create_app
    from service.app import shutdown

    app = create_app({"model_uri": str(tiny_model_dir), "compute_threads": 1, "batching": False})
    yield app.test_client()
    shutdown(app)


@pytest.mark.parametrize("depth", [5_000, 100_000])
@pytest.mark.parametrize("route", ["/predict", "/v2/models/classifier/infer"])
def test_json_nested_thousands_deep_is_a_400_not_a_500(service_client, route, depth):
    """schemathesis never nests this deep; benchmarks/chaos.py's fuzz section does, and got a 500
    (RecursionError out of json.loads)."""
    for body in ('{"texts": ' + "[" * depth + "]" * depth + "}", "[" * depth + "]" * depth):
        answer = service_client.post(route, data=body, content_type="application/json")
        assert answer.status_code == 400, answer.get_data(as_text=True)[:200]
        assert answer.get_json()["error"] == "the request body is JSON nested too deeply to read"
    assert service_client.post(route, data="[" * 100 + "]" * 100).status_code == 422  # deep, but readable


def test_options_answers_json_like_every_other_route(service_client):
    answer = service_client.options("/predict")
    assert answer.status_code == 200 and answer.get_json() == {"allow": ["OPTIONS", "POST"]}
    assert set(answer.headers["Allow"].split(", ")) == {"POST", "OPTIONS"}


def test_what_gunicorn_refuses_before_the_app_is_answered_in_json():
    """A request line over limit_request_line: gunicorn writes the refusal itself, as HTML unless told."""
    import socket

    from gunicorn import util

    from service import gunicorn_worker

    assert util.write_error is gunicorn_worker.write_json_error
    ours, theirs = socket.socketpair()
    with ours, theirs:
        util.write_error(ours, 400, "Bad Request", "Request Line is too large (5024 > 4094)")
        ours.shutdown(socket.SHUT_WR)
        raw = theirs.makefile("rb").read()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request") and b"Content-Type: application/json" in head
    assert f"Content-Length: {len(body)}".encode() in head
    refusal = json.loads(body)
    assert refusal["error"] == "Request Line is too large (5024 > 4094)"
    assert f"X-Request-ID: {refusal['request_id']}".encode() in head


# -- EWC on a GPU ------------------------------------------------------------------------------------


def test_restored_ewc_state_follows_the_training_device(tmp_path):
    """restore() builds the importances and anchor on the CPU (the model is there then); Avalanche moves the
    model to strategy.device afterwards, so the state must follow it before the penalty meets it. There is
    no GPU here: 'meta' stands in for cuda, and it is enough that every tensor lands on the device the
    strategy reports."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    save_file({f"importance:{name}": torch.ones_like(p) for name, p in model.named_parameters()},
              tmp_path / "ewc.safetensors")
    (tmp_path / "round.json").write_text(json.dumps({"index": 1}))
    params = load_params()
    params["strategy"]["name"] = "replay+ewc"
    strategy = make_strategy(params)
    (ewc,) = [plugin for plugin in strategy.plugins() if hasattr(plugin, "importances")]
    strategy.restore(tmp_path, RoundContext(None, {}, 8), model)
    stored = [data for store in (ewc.importances, ewc.saved_params) for group in store.values()
              for data in group.values()]
    assert len(stored) == 8 and all(data.data.device.type == "cpu" for data in stored)

    class Template:  # what the plugin reads of Avalanche's template
        device = torch.device("meta")

    ewc.before_training_exp(Template())
    assert all(data.data.device.type == "meta" and data.device.type == "meta" for data in stored)
    grown = stored[0].expand((stored[0].shape[0] + 1, *stored[0].shape[1:]))  # a head that grows pads there too
    assert grown.device.type == "meta"
