import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random BERT (2 layers, hidden 32) with MiniLM's real tokenizer, labels neg/neu/pos."""
    from continual.model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", ["neg", "neu", "pos"])
