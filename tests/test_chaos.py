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
from test_ingest import make_workspace, snapshot

from continual import cli, ingest
from continual.ingest import read_split
from continual.params import load_params
from continual.strategies import RoundContext, make_strategy
from continual.workspace import Workspace

HOSTILE = Path(__file__).resolve().parent / "fixtures" / "hostile"
BIN = Path(sys.executable).parent


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
    assert code == 2, err
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
    monkeypatch.setattr(ingest, "_run", lambda cmd, cwd: None)
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


def run(cwd: Path, *cmd, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "CONTINUAL_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)
    if check and done.returncode:
        raise AssertionError(f"{cmd} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def tiny_workspace(root: Path, model_dir: Path) -> Path:
    run(root.parent, BIN / "continual", "init", root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["model"].update(base=str(model_dir), max_length=32)
    params["train"].update(epochs=1, batch_size=16)
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


# -- regressions found by the chaos suite -----------------------------------------------------------------


def test_jsonl_nested_too_deeply_is_a_refusal_naming_the_line_not_a_recursion_error(tmp_path):
    from continual.jsonl import JsonlError, parse_lines

    text = '{"text": "a", "label": "b"}\n' + "[" * 100_000 + "]" * 100_000 + "\n"
    with pytest.raises(JsonlError, match="line 2: not valid JSON here: nested too deeply"):
        list(parse_lines(text, tmp_path / "deep.jsonl"))


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
