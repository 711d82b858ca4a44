import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from helpers import TINY_ROWS, export_tiny  # noqa: E402

torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files with a test marked slow (a real server, dvc repro, real MiniLM) first, in their order, then the
    rest: `make test` hands whole files to its workers in this order (--dist loadfile --no-loadscope-reorder), so
    no long file starts last and runs on alone while the other workers have nothing left."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random BERT (2 layers, hidden 32) with MiniLM's real tokenizer, labels neg/neu/pos."""
    from continual.model.encoder import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", ["neg", "neu", "pos"])


@pytest.fixture(scope="session")
def onnx_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model as a round writes it: weights, plus onnx/ (fp32, int8, the int8 report)."""
    import shutil

    folder = tmp_path_factory.mktemp("onnx") / "model"
    shutil.copytree(tiny_model_dir, folder)
    return export_tiny(folder)


@pytest.fixture(scope="session")
def monitored_model_dir(onnx_model_dir, tmp_path_factory):
    """The tiny exported model with the reference a round stores: three arrivals (hostile names among them) in
    its lineage, every one of their 18 held-out rows embedded."""
    import shutil

    from continual.model.encoder import load_classifier
    from continual.rounds.reference import write_reference

    folder = tmp_path_factory.mktemp("monitored") / "model"
    shutil.copytree(onnx_model_dir, folder)
    model, tokenizer = load_classifier(folder, trainable=False)
    tests = {"tweets": TINY_ROWS[:6], "<script>alert(1)</script>": TINY_ROWS[6:12], "שלום 🎉": TINY_ROWS[12:]}
    matrix = [[0.9], [0.8, 0.85], [0.75, 0.8, 0.9]]
    write_reference(model, tokenizer, folder, TINY_ROWS, tests, matrix, batch_size=8)
    return folder
