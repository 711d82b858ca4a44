"""The registered model as MLflow's pyfunc flavour: what `mlflow.pyfunc.load_model` and `mlflow models serve` run.

The transformers flavour's text-classification pipeline reads the CLS pooler, so it cannot express a mean-pooled
encoder; this wrapper loads the same folder (``service.pooled``) that the round wrote and our server loads.
Input: a list of texts, a Series, or a DataFrame whose first column (or ``text`` column) holds the texts.
Output: a DataFrame with ``label``, ``score`` and ``probabilities`` (in the order of the model's labels).
"""
from __future__ import annotations

import os

import mlflow.pyfunc
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, DataType, Schema

ARTIFACT = "classifier"  # the round's model folder, logged under artifacts/classifier
# No input example is logged: MLflow validates one by loading the model, which would import torch (about
# 0.9 GB) into the track stage. The signature names what goes in and what comes out.
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec(DataType.string)]),  # unnamed: a list of texts, a Series or a one-column frame
    outputs=Schema([ColSpec(DataType.string, "label"), ColSpec(DataType.double, "score"),
                    ColSpec(Array(DataType.double), "probabilities")]))


class PooledPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoTokenizer

        from service.pooled import PooledClassifier

        folder = context.artifacts[ARTIFACT]
        self.model = PooledClassifier.load(folder)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)

    def predict(self, context, model_input, params=None):
        import pandas as pd

        from service.pooled import predict_proba

        texts = _texts(model_input)
        probabilities = predict_proba(self.model, self.tokenizer, texts)
        best = probabilities.argmax(-1).tolist() if len(texts) else []
        return pd.DataFrame({
            "label": [self.model.labels[i] for i in best],
            "score": [float(probabilities[row, i]) for row, i in enumerate(best)],
            "probabilities": probabilities.tolist(),
        })


def _texts(model_input) -> list[str]:
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        column = "text" if "text" in model_input.columns else model_input.columns[0]
        model_input = model_input[column]
    if isinstance(model_input, str):
        model_input = [model_input]
    texts = [str(text) for text in list(model_input)]
    return texts
