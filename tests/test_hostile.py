"""Hostile or careless input to the CLI, the server's launcher and the packaging: refused with one clear
line, nothing changed, nothing deleted that is not ours."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import labelled, make_workspace, snapshot, write_csv

from continual import cli
from continual.workspace.layout import ARRIVAL_NAME, Workspace

REPO = Path(__file__).resolve().parents[1]
KEYS = ["0001-tweets", "0002-movies"]


def registered_workspace(root: Path) -> Workspace:
    """Only stream.yaml: enough for every check that a key is registered."""
    root.mkdir()
    ws = Workspace.at(root)
    ws.stream_file.write_text(ws.stream_text(KEYS))
    return ws


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


def assert_one_line(err: str, command: str) -> None:
    assert err.startswith(f"continual {command}: error: "), err
    assert "Traceback" not in err and err.count("\n") == 1, err


# -- names and keys ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../x", "a/b", "abc\n", "", "a" * 64, "café", "x\u2028", "Tweets", "a b", ".x"])
def test_arrival_name_pattern_refuses(name):
    assert not ARRIVAL_NAME.match(name)  # \Z, not $: also safe for callers that use match()
    assert not ARRIVAL_NAME.fullmatch(name)


def test_arrival_name_pattern_accepts():
    for name in ("tweets", "0", "a-b_c", "a" * 63):
        assert ARRIVAL_NAME.fullmatch(name)


@pytest.mark.parametrize("name", ["../x", "a/b", "abc\n", "", "a" * 64, "ünïcode"])
def test_cli_ingest_refuses_a_bad_name_and_changes_nothing(capsys, tmp_path, name):
    ws = make_workspace(tmp_path / "ws")
    source = write_csv(tmp_path / "in.csv", labelled(5))
    before = snapshot(ws.root)
    code, err = run_cli(capsys, "-C", str(ws.root), "ingest", str(source), "--name", name)
    assert code == 1
    assert_one_line(err, "ingest")
    assert "is not allowed: use 1-63 lowercase ASCII letters" in err
    assert snapshot(ws.root) == before
    assert not (tmp_path / "x").exists()


def test_round_refuses_an_unregistered_key_and_lists_the_keys(capsys, tmp_path):
    ws = registered_workspace(tmp_path / "ws")
    code, err = run_cli(capsys, "-C", str(ws.root), "round", "BAD")
    assert code == 1
    assert_one_line(err, "round")
    assert "'BAD' is not a round key registered in stream.yaml" in err
    assert "0001-tweets, 0002-movies" in err and "is not in list" not in err


@pytest.mark.parametrize("key", ["../x", "../../etc", "0001-tweets/../../x", "/tmp", "0003-news"])
def test_promote_takes_only_a_registered_key(capsys, tmp_path, key):
    ws = registered_workspace(tmp_path / "ws")
    before = snapshot(tmp_path)
    code, err = run_cli(capsys, "-C", str(ws.root), "promote", key)
    assert code == 1
    assert_one_line(err, "promote")
    assert "not a round key registered in stream.yaml" in err
    assert snapshot(tmp_path) == before  # not even an MLflow store was created


@pytest.mark.parametrize("key", ["../../x", "../x", "0001-tweets/../../../x", str(Path("/tmp")), "0003-news"])
def test_merge_takes_only_a_registered_key(capsys, tmp_path, key):
    ws = registered_workspace(tmp_path / "ws")
    outside = tmp_path / "x" / "model"  # what ../../x names from rounds/: a model folder outside the workspace
    outside.mkdir(parents=True)
    (outside / "classifier.json").write_text("{}")
    before = snapshot(tmp_path)
    code, err = run_cli(capsys, "-C", str(ws.root), "merge", key, str(tmp_path / "out"))
    assert code == 1
    assert_one_line(err, "merge")
    assert f"{key!r} is not a round key registered in stream.yaml" in err
    assert snapshot(tmp_path) == before


def test_workspace_key_checks_raise_lookup_error(tmp_path):
    ws = registered_workspace(tmp_path / "ws")
    assert ws.keys_up_to("0002-movies") == KEYS
    assert ws.previous_key("0002-movies") == "0001-tweets"
    for call in (ws.keys_up_to, ws.previous_key, ws.registered):
        with pytest.raises(LookupError, match="registered: 0001-tweets, 0002-movies"):
            call("../x")


# -- where a command runs: the workspace is found upwards, as git finds its repository ---------------


def test_ingest_from_a_subfolder_registers_in_the_workspace(capsys, monkeypatch, tmp_path):
    ws = make_workspace(tmp_path / "ws")
    (ws.root / "data").mkdir()
    write_csv(tmp_path / "in" / "tweets.csv", labelled(5))
    monkeypatch.chdir(ws.root / "data")
    assert cli.main(["ingest", "../../in/tweets.csv", "--name", "tweets"]) == 0  # relative to data/
    assert "Registered 0001-tweets" in capsys.readouterr().out
    assert ws.stream() == ["0001-tweets"] and ws.arrival_split_file("0001-tweets", "train").is_file()
    assert not (ws.root / "data" / "data").exists() and not (ws.root / "data" / "stream.yaml").exists()

    deeper = ws.arrival_dir("0001-tweets")  # three levels down, inside an arrival
    monkeypatch.chdir(deeper)
    before = sorted(p.name for p in deeper.iterdir())
    write_csv(tmp_path / "in" / "movies.csv", labelled(5, prefix="movie"))
    assert cli.main(["ingest", os.path.relpath(tmp_path / "in" / "movies.csv"), "--name", "movies"]) == 0
    assert ws.stream() == ["0001-tweets", "0002-movies"]
    assert cli.main(["verify"]) == 0 and (ws.root / ".continual" / "verified").is_file()
    assert cli.main(["status"]) == 0 and "not trained yet: 0001-tweets, 0002-movies" in capsys.readouterr().out
    assert sorted(p.name for p in deeper.iterdir()) == before  # nothing written where the commands ran
    monkeypatch.chdir(tmp_path)
    assert cli.main(["-C", "ws/data/arrivals", "status"]) == 0  # -C names a folder in the workspace too
    assert "0002-movies" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["ingest", "../in.csv", "--name", "x"], ["status"], ["verify"], ["report"], ["round", "0001-x"], ["track"],
    ["promote", "0001-x"], ["rollback"], ["merge", "0001-x", "out"], ["repair"], ["capture", "export", "out.csv"],
    ["drift"], ["compare"],
])
def test_a_workspace_command_outside_a_workspace_is_refused_with_exit_1(capsys, monkeypatch, tmp_path, argv):
    here = tmp_path / "not-a-workspace" / "data"
    here.mkdir(parents=True)
    write_csv(tmp_path / "not-a-workspace" / "in.csv", labelled(5))
    before = snapshot(tmp_path)
    monkeypatch.chdir(here)
    code, err = run_cli(capsys, *argv)
    assert code == 1
    assert_one_line(err, argv[0])
    assert f"{here} is not in a continual workspace (no stream.yaml there or in any folder above it)" in err
    assert snapshot(tmp_path) == before


# -- how the CLI reports errors ------------------------------------------------------------------


def _mlflow_error() -> Exception:
    from mlflow.exceptions import MlflowException

    return MlflowException("RESOURCE_DOES_NOT_EXIST: registered model 'x' not found")


@pytest.mark.parametrize("error, shown", [
    (LookupError("no such round"), "no such round"),
    (KeyError("strategy"), "missing key 'strategy'"),
    (ValueError("bad value"), "bad value"),
    (FileNotFoundError(2, "No such file or directory", "x.yaml"), "No such file or directory: 'x.yaml'"),
    (PermissionError(13, "Permission denied", "mlflow.db"), "Permission denied"),
    (subprocess.CalledProcessError(1, ["dvc", "init"]), "returned non-zero exit status 1"),
    (_mlflow_error, "registered model 'x' not found"),
])
def test_user_errors_are_one_line_and_exit_1(capsys, monkeypatch, tmp_path, error, shown):
    error = error() if callable(error) and not isinstance(error, BaseException) else error

    def fails(args):
        raise error

    monkeypatch.setattr(cli.data, "cmd_verify", fails)
    code, err = run_cli(capsys, "-C", str(tmp_path), "verify")
    assert code == 1
    assert_one_line(err, "verify")
    assert shown in err


def test_a_bug_still_shows_its_traceback(monkeypatch, tmp_path):
    def fails(args):
        raise TypeError("a bug")

    monkeypatch.setattr(cli.data, "cmd_verify", fails)
    with pytest.raises(TypeError):
        cli.main(["-C", str(tmp_path), "verify"])


# -- serving -------------------------------------------------------------------------------------


class FakeGunicorn:
    started: list[dict] = []

    def __init__(self, config, options):
        self.options = options

    def run(self):
        FakeGunicorn.started.append(self.options)


def test_serve_debug_never_starts_the_werkzeug_debugger(monkeypatch):
    import flask

    from service import serve

    def no_dev_server(*args, **kwargs):
        raise AssertionError("Flask's dev server (and its interactive debugger) must not start")

    monkeypatch.setattr(flask.Flask, "run", no_dev_server)
    monkeypatch.setattr(serve, "GunicornServer", FakeGunicorn)
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    FakeGunicorn.started.clear()
    assert serve.main(["--model-uri", "some/folder", "--debug"]) == 0
    assert FakeGunicorn.started[-1]["loglevel"] == "debug"
    assert serve.main(["--model-uri", "some/folder"]) == 0
    assert FakeGunicorn.started[-1]["loglevel"] == "info"


def test_multiproc_cleanup_deletes_only_prometheus_files(monkeypatch, tmp_path):
    from service import gunicorn_conf

    folder = tmp_path / "prom"
    folder.mkdir()
    ours = ["counter_12.db", "gauge_livesum_12.db", "gauge_all_7.db", "histogram_12.db", "summary_3.db"]
    for name in ours:
        (folder / name).write_bytes(b"x")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    gunicorn_conf.on_starting(None)
    assert list(folder.iterdir()) == []

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "new" / "prom"))
    gunicorn_conf.on_starting(None)
    assert (tmp_path / "new" / "prom").is_dir()


@pytest.mark.parametrize("other", ["mlflow.db", "params.yaml", "counter_1.db.bak", "gauge_all_1.db/"])
def test_multiproc_dir_pointed_at_a_workspace_is_refused_and_untouched(monkeypatch, capsys, tmp_path, other):
    from service import gunicorn_conf, serve

    folder = tmp_path / "ws"
    (folder / other).parent.mkdir(parents=True, exist_ok=True)
    (folder / other).mkdir() if other.endswith("/") else (folder / other).write_bytes(b"SQLite format 3\0 precious")
    (folder / "counter_1.db").write_bytes(b"x")
    before = snapshot(folder)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    with pytest.raises(RuntimeError, match=re.escape(other.rstrip("/"))):  # gunicorn prints it and exits
        gunicorn_conf.on_starting(None)
    monkeypatch.setattr(serve, "GunicornServer", FakeGunicorn)
    FakeGunicorn.started.clear()
    with pytest.raises(ValueError, match="point it at an empty folder of its own"):
        serve.main(["--model-uri", "some/folder"])
    code, err = run_cli(capsys, "-C", str(tmp_path), "serve", "--model-uri", "some/folder")
    assert code == 1 and "continual serve: error: PROMETHEUS_MULTIPROC_DIR=" in err
    assert FakeGunicorn.started == []
    assert snapshot(folder) == before


# -- packaging -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_wheel_install_can_init_a_workspace(tmp_path):
    # Build from a copy: setuptools writes build/ and *.egg-info beside the sources it builds.
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("continual", "service"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, cwd=tmp_path, capture_output=True)
    wheel = next((tmp_path / "dist").glob("continual-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {"continual/template/params.yaml", "continual/template/dvc.yaml", "service/openapi.yaml"} <= set(names)

    target = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True,
                   capture_output=True)
    code = (
        "import sys, continual, continual.cli\n"
        f"assert continual.__file__.startswith({str(target)!r}), continual.__file__\n"
        "sys.exit(continual.cli.main(['init', sys.argv[1]]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    run = tmp_path / "elsewhere"  # not the repository: its continual/ must not be found first
    run.mkdir()
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "ws")], cwd=run, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("dvc.yaml", "params.yaml", "stream.yaml"):
        assert (tmp_path / "ws" / name).is_file()
    assert (tmp_path / "ws" / "params.yaml").read_bytes() == (target / "continual/template/params.yaml").read_bytes()
