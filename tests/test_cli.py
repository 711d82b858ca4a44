"""The command line's conventions: exit 1 for a failed command and 2 for a usage error, a workspace command
outside a workspace refused in one line with nothing written, `--help` that never writes, help text on every
argument; and `continual round` putting back a round that a kill kept DVC from recording."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys

import pytest

from continual import cli
from continual.cli.serving import MODEL_VARIABLES
from continual.params import load_params
from continual.workspace.finished_round import keep_finished_round
from helpers import build_stream, labelled, make_workspace, snapshot, write_csv


def parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every (sub)command's parser with the words that reach it: (), ("init",), ..., ("capture", "export")."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, (*path, name))


COMMANDS = [path for path, _ in parsers(cli.build_parser())]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line(err: str, command: str) -> None:
    assert err.startswith(f"continual {command}: error: "), err
    assert "Traceback" not in err and err.count("\n") == 1, err


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """One git + DVC workspace for the tests that leave it as it was (each checks that it did)."""
    root = tmp_path_factory.mktemp("cli")
    write_csv(root / "in.csv", labelled(5))
    return make_workspace(root / "ws")


# -- help ----------------------------------------------------------------------------------------


def test_every_command_is_walked():
    assert {("init",), ("serve",), ("capture", "export"), ("round",), ("drift",)} <= set(COMMANDS)


def test_every_argument_has_help_text():
    missing = []
    for path, parser in parsers(cli.build_parser()):
        for action in parser._actions:
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"continual {' '.join(path)}: {action.dest}")
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"continual {' '.join(path)} {choice.dest}" for choice in action._choices_actions
                            if not choice.help]
    assert missing == []


@pytest.mark.parametrize("where", ["empty folder", "workspace"])
def test_help_of_every_command_writes_nothing(capsys, monkeypatch, tmp_path, where):
    folder = build_stream(tmp_path / "ws", [["a", "b"]]).root if where == "workspace" else tmp_path / "empty"
    folder.mkdir(exist_ok=True)  # the workspace: one arrival, no identity yet (`continual serve` would write one)
    before = snapshot(tmp_path)
    monkeypatch.chdir(folder)
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exited:
            cli.main([*command, "--help"])
        assert exited.value.code == 0, command
        assert "usage:" in capsys.readouterr().out, command
        assert snapshot(tmp_path) == before, f"continual {' '.join(command)} --help wrote"


def test_serve_help_from_the_command_line_writes_nothing(tmp_path):
    """`continual serve --help` once wrote .continual/workspace_id where it ran; and `python -m continual.cli`
    is the same command."""
    done = subprocess.run([sys.executable, "-m", "continual.cli", "serve", "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--model-uri" in done.stdout, done.stderr
    assert list(tmp_path.iterdir()) == []


# -- exit codes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    [], ["nosuch"], ["status", "--bogus"], ["round"], ["ingest", "in.csv"], ["capture"], ["ui", "--port", "x"],
    ["compare", "--seeds", "1,x"],
    ["drift", "--texts", "in.csv", "--model", "m"], ["drift", "--texts", "in.csv", "--url", "http://x"],
    ["drift", "--model-uri", "m"],
])
def test_a_usage_error_exits_2_and_writes_nothing(capsys, monkeypatch, workspace, argv):
    monkeypatch.chdir(workspace.root)
    before = snapshot(workspace.root.parent)
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: continual") and "error: " in err and "Traceback" not in err
    assert snapshot(workspace.root.parent) == before


@pytest.mark.parametrize("argv, shown", [
    (["round", "0009-nope"], "is not a round key registered in stream.yaml"),
    (["promote", "0009-nope"], "is not a round key registered in stream.yaml"),
    (["merge", "0009-nope", "out"], "is not a round key registered in stream.yaml"),
    (["ingest", "missing.csv", "--name", "x"], "missing.csv"),
    (["ingest", "../in.csv", "--name", "Bad Name"], "is not allowed"),
])
def test_a_failed_command_exits_1_in_one_line(capsys, monkeypatch, workspace, argv, shown):
    monkeypatch.chdir(workspace.root)
    before = snapshot(workspace.root.parent)
    code, _, err = run_cli(capsys, *argv)
    assert code == 1
    assert_one_line(err, argv[0])
    assert shown in err
    assert snapshot(workspace.root.parent) == before


def test_params_a_command_cannot_use_fail_it_with_1(capsys, tmp_path):
    ws = build_stream(tmp_path / "ws", [["a", "b"]])
    ws.params_file.write_text("progress:\n  interval_s: 0\n")
    code, _, err = run_cli(capsys, "-C", str(ws.root), "status")
    assert code == 1
    assert_one_line(err, "status")
    assert "interval_s" in err


def test_a_value_error_from_a_command_is_one_line_and_exit_1(capsys, monkeypatch, tmp_path):
    def refuses(args):
        raise ValueError("params.yaml: unknown key train.epoch; did you mean train.epochs?")

    monkeypatch.setattr(cli.data, "cmd_status", refuses)
    code, _, err = run_cli(capsys, "-C", str(tmp_path), "status")
    assert code == 1
    assert err == "continual status: error: params.yaml: unknown key train.epoch; did you mean train.epochs?\n"


# -- outside a workspace -------------------------------------------------------------------------


OUTSIDE = [
    ["ingest", "../in.csv", "--name", "x"], ["verify"], ["status"], ["status", "--costs"], ["report"],
    ["repair"], ["round", "0001-x"], ["track"], ["promote", "0001-x"], ["rollback"], ["merge", "0001-x", "out"],
    ["compare"], ["ui", "--no-server", "--no-browser"], ["drift"], ["drift", "--texts", "../in.csv"],
    ["capture", "export", "out.csv"], ["serve"],
]


def test_every_workspace_command_is_listed():
    listed = {argv[0] for argv in OUTSIDE}
    assert listed == {path[0] for path in COMMANDS if path} - {"init", "demo"}  # those two make a workspace


@pytest.mark.parametrize("argv", OUTSIDE, ids=" ".join)
def test_a_workspace_command_outside_a_workspace_fails_in_one_line_and_writes_nothing(capsys, monkeypatch, tmp_path,
                                                                                      argv):
    for variable in MODEL_VARIABLES:  # a server told which model to serve may run outside a workspace
        monkeypatch.delenv(variable, raising=False)
    here = tmp_path / "nowhere" / "data"
    here.mkdir(parents=True)
    write_csv(here.parent / "in.csv", labelled(5))
    before = snapshot(tmp_path)
    monkeypatch.chdir(here)
    code, out, err = run_cli(capsys, *argv)
    assert code == 1 and out == ""
    assert_one_line(err, argv[0])
    assert f"{here} is not in a continual workspace" in err
    assert snapshot(tmp_path) == before


def test_minus_c_outside_a_workspace_is_refused_the_same_way(capsys, tmp_path):
    before = snapshot(tmp_path)
    code, _, err = run_cli(capsys, "-C", str(tmp_path), "status")
    assert code == 1 and f"{tmp_path} is not in a continual workspace" in err
    assert snapshot(tmp_path) == before


# -- a round that a kill kept DVC from recording --------------------------------------------------


def test_round_puts_back_a_finished_round_instead_of_training_it(capsys, tmp_path):
    ws = build_stream(tmp_path / "ws", [["a", "b"]])
    key = ws.stream()[0]
    inputs = ws.round_inputs(key, load_params(ws.params_file))
    (ws.round_dir(key) / "model").mkdir(parents=True)
    (ws.round_dir(key) / "model" / "weights.bin").write_bytes(b"trained")
    ws.metrics_dir.mkdir()
    ws.round_metrics_file(key).write_text(json.dumps({"round": 1, "avg_acc": 0.9}))
    keep_finished_round(ws, key, inputs)
    shutil.rmtree(ws.round_dir(key))  # as `dvc repro` does before it runs the stage again
    os.remove(ws.round_metrics_file(key))
    half = ws.rounds_dir / f".{key}.tmp-gone"  # a temp folder whose writer is dead
    half.mkdir()

    code, out, _ = run_cli(capsys, "-C", str(ws.root), "round", key)
    assert code == 0 and f"round {key}: restored, not retrained" in out
    assert (ws.round_dir(key) / "model" / "weights.bin").read_bytes() == b"trained"
    assert json.loads(ws.round_metrics_file(key).read_text())["avg_acc"] == 0.9
    assert not half.exists()
