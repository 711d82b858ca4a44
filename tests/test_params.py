"""params.yaml's typed schema (continual/params/): the template documents every setting and only settings, the
server's defaults are the schema's, and a file that does not fit is refused before any command does work: an
unknown key with the nearest known one, a wrong type or a value out of range with its dotted key, a typo under
`dvc exp run -S` too, and the workspace is left as it was."""
from __future__ import annotations

import re

import pytest
import yaml

from continual.params import Params, ParamsError, default_params_text, load_params, read_params
from continual.params.typed import dotted_keys, to_dict
from helpers import BIN, GIT, build_stream, make_workspace, rounds_run, run, snapshot, write_arrival
from service.config import ServiceConfig

TEMPLATE = default_params_text()


def template_keys(data: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in data.items():
        keys.add(prefix + key)
        if isinstance(value, dict):
            keys |= template_keys(value, f"{prefix}{key}.")
    return keys


def test_the_template_holds_every_setting_of_the_schema_and_nothing_else():
    assert template_keys(yaml.safe_load(TEMPLATE)) == set(dotted_keys(Params))


def test_the_templates_values_are_the_schemas_defaults():
    assert Params.from_dict(yaml.safe_load(TEMPLATE)) == Params()
    assert load_params() == Params().to_dict() == yaml.safe_load(TEMPLATE)


def test_the_servers_defaults_are_the_schemas_sections():
    server, params = ServiceConfig(), Params()
    monitoring, capture = params.monitoring, params.monitoring.capture
    assert (server.monitoring, server.monitoring_window, server.monitoring_interval_s, server.monitoring_min_texts) == (
        monitoring.enabled, monitoring.window, monitoring.interval_s, monitoring.min_texts)
    assert server.drift_thresholds == to_dict(monitoring.thresholds)
    assert (server.capture_rate, server.capture_max_rows, server.capture_max_bytes, server.capture_anonymous) == (
        capture.rate, capture.max_rows, capture.max_bytes, capture.anonymous)
    assert (server.max_quantized_drop, server.read_header_timeout_s, server.read_body_timeout_s) == (
        params.serving.max_quantized_drop, params.serving.read_header_timeout_s, params.serving.read_body_timeout_s)


@pytest.mark.parametrize("data, message", [
    ({"train": {"epoch": 3}}, "unknown key train.epoch: did you mean train.epochs?"),
    ({"strategy": {"nmae": "ewc"}}, "unknown key strategy.nmae: did you mean strategy.name?"),
    ({"epochs": 3}, "unknown key epochs: did you mean train.epochs?"),
    ({"monitoring": {"thresholds": {"embeding_auc": 0.6}}}, "unknown key monitoring.thresholds.embeding_auc: did you "
                                                            "mean monitoring.thresholds.embedding_auc?"),
    ({"train": {"zzz": 1}}, "unknown key train.zzz: the keys of train are epochs, batch_size,"),
    ({"train": {"epochs": "three"}}, "train.epochs must be an integer, not 'three'"),
    ({"train": {"epochs": 2.5}}, "train.epochs must be an integer, not 2.5"),
    ({"train": {"epochs": 0}}, "train.epochs must be at least 1, not 0"),
    ({"train": {"lr": "fast"}}, "train.lr must be a number, not 'fast'"),
    ({"export": {"onnx": "yes"}}, "export.onnx must be true or false, not 'yes'"),
    ({"strategy": {"name": "replay_ewc"}}, "strategy.name must be one of naive, replay, ewc, replay+ewc, joint, ncm, "
                                           "ridge, adapt, olora, not 'replay_ewc': did you mean replay+ewc?"),
    ({"strategy": {"ridge": {"lambda": "aut"}}}, "strategy.ridge.lambda must be 'auto' or a number, not 'aut'"),
    ({"strategy": {"ridge": {"lambda": 0}}}, "strategy.ridge.lambda must be above 0, not 0"),
    ({"ingest": {"test_fraction": 1}}, "ingest.test_fraction must be below 1, not 1"),
    ({"model": {"lora": {"target_modules": "query"}}}, "model.lora.target_modules must be a list of strings, not 'query'"),
    ({"monitoring": {"window": 1}}, "monitoring.window must be at least 2, not 1"),
    ({"monitoring": {"min_texts": 600}}, "monitoring: min_texts (600) must not exceed window (500)"),
    ({"monitoring": {"capture": {"rate": 1.5}}}, "monitoring.capture.rate must be at most 1, not 1.5"),
    ({"serving": {"read_body_timeout_s": 0}}, "serving.read_body_timeout_s must be above 0, not 0"),
    ({"progress": {"interval_s": float("nan")}}, "progress.interval_s must be a number, not nan"),
    ({"train": 3}, "train must be a mapping of settings (key: value lines), not 3"),
    ([1, 2], "the file must be a mapping of settings (key: value lines), not [1, 2]"),
])
def test_a_setting_that_does_not_fit_is_refused_naming_its_key(data, message):
    with pytest.raises(ParamsError, match=re.escape(f"ws/params.yaml: {message}")) as caught:
        Params.from_dict(data, "ws/params.yaml")
    assert isinstance(caught.value, ValueError) and caught.value.file == "ws/params.yaml"


def test_load_params_normalises_the_values_and_fills_in_the_defaults(tmp_path):
    file = tmp_path / "params.yaml"
    file.write_text("train:\n  lr: 1e-4\n  epochs: 3.0\nstrategy:\n  ridge:\n    lambda: 1e-2\nmonitoring:\n")
    params = load_params(file)
    assert params["train"]["lr"] == 1e-4 and isinstance(params["train"]["lr"], float)  # YAML 1.1 reads 1e-4 as text
    assert params["train"]["epochs"] == 3 and isinstance(params["train"]["epochs"], int)
    assert params["strategy"]["ridge"]["lambda"] == 0.01
    assert params["monitoring"] == load_params()["monitoring"] and params["tracking"]["register_models"] is True
    assert read_params(file).train.epochs == 3 and read_params(file).strategy.ridge.lambda_ == 0.01
    assert load_params(tmp_path / "missing.yaml") == load_params()  # no file: the shipped defaults (serve outside)


def test_a_file_that_is_not_yaml_is_refused_with_its_name(tmp_path):
    file = tmp_path / "params.yaml"
    file.write_text("train: [epochs\n")
    with pytest.raises(ParamsError, match=re.escape(f"{file}: not valid YAML")):
        load_params(file)


@pytest.mark.parametrize("written, typo, message", [
    ("  epochs: 4 ", "  epoch: 4 ", "unknown key train.epoch: did you mean train.epochs?"),
    ("  name: adapt ", "  nmae: adapt ", "unknown key strategy.nmae: did you mean strategy.name?"),
    ("  batch_size: 32\n", "  batch_size: many\n", "train.batch_size must be an integer, not 'many'"),
])
def test_continual_round_refuses_a_typo_and_writes_nothing(tmp_path, written, typo, message):
    ws = make_workspace(tmp_path / "ws")
    build_stream(ws.root, [["a", "b"]], n_train=4, n_test=2)
    assert TEMPLATE.count(written) == 1
    ws.params_file.write_text(TEMPLATE.replace(written, typo))
    before = snapshot(ws.root)
    done = run(ws.root, BIN / "continual", "round", ws.stream()[0], check=False)
    assert done.returncode == 1 and done.stderr.endswith(f"params.yaml: {message}\n"), done.stderr
    assert done.stderr.startswith("continual round: error: ") and done.stderr.count("\n") == 1
    assert snapshot(ws.root) == before


def test_dvc_exp_run_with_a_typo_fails_before_any_round(tmp_path):
    root = tmp_path / "ws"
    run(tmp_path, BIN / "continual", "init", str(root))
    arrival = write_arrival(tmp_path / "one.csv", {"neg": "awful terrible", "pos": "lovely great"}, 6, "one")
    run(root, BIN / "continual", "ingest", str(arrival), "--name", "one")
    run(root, *GIT, "add", "-A")
    run(root, *GIT, "commit", "-qm", "one arrival")
    files = lambda: {k: v for k, v in snapshot(root, skip=(".git", ".dvc/tmp")).items() if v != "dir"}  # noqa: E731
    before = files()

    # DVC itself refuses to override a key params.yaml does not have, and changes nothing.
    refused = run(root, BIN / "dvc", "exp", "run", "-S", "train.epoch=3", check=False)
    assert refused.returncode != 0 and "train.epoch" in refused.stderr and rounds_run(refused) == []
    assert files() == before

    # `+key=value` appends the key: the pipeline's first stage refuses the file before any round runs.
    appended = run(root, BIN / "dvc", "exp", "run", "-S", "+train.epoch=3", check=False)
    output = appended.stdout + appended.stderr
    assert appended.returncode != 0 and "params.yaml: unknown key train.epoch: did you mean train.epochs?" in output
    assert rounds_run(appended) == [] and "Traceback" not in output
    assert {k: v for k, v in files().items() if k != "params.yaml"} == {k: v for k, v in before.items()
                                                                      if k != "params.yaml"}
    assert "epoch: 3" in (root / "params.yaml").read_text()  # dvc exp run wrote the override, nothing else did
