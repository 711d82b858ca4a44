"""Rows of text -> token tensors Avalanche can train on, padded per batch (dynamic padding)."""
from __future__ import annotations

import torch
from avalanche.benchmarks.utils import DataAttribute
from avalanche.benchmarks.utils.classification_dataset import ClassificationDataset
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import Dataset

from continual.model.encoder import token_ids


class TokenizedRows(Dataset):
    """(input_ids, label id) per row; tokenised once, unpadded."""

    def __init__(self, rows: list[dict], tokenizer, label2id: dict[str, int], max_length: int):
        encoded = token_ids(tokenizer, [row["text"] for row in rows], max_length, "tokenize the training rows")
        self.input_ids = [torch.tensor(ids, dtype=torch.long) for ids in encoded]
        self.targets = [label2id[row["label"]] for row in rows]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.input_ids[i], self.targets[i]


class PadCollate:
    """Pads a batch only to its longest sequence. A class, not a closure, so DataLoaders can pickle it."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, batch):
        input_ids = pad_sequence([item[0] for item in batch], batch_first=True, padding_value=self.pad_token_id)
        rest = [torch.as_tensor([item[k] for item in batch]) for k in range(1, len(batch[0]))]
        return [input_ids, *rest]


def avalanche_dataset(rows: list[dict], row_ids: list[int], tokenizer, label2id: dict[str, int],
                      max_length: int) -> ClassificationDataset:
    """An Avalanche classification dataset whose items are (input_ids, label, task=0).

    ``row_ids`` ride along as a data attribute (not in the batch), so after Avalanche's storage policy has
    sub-sampled a buffer we can still tell which rows it kept and save them as text.
    """
    base = TokenizedRows(rows, tokenizer, label2id, max_length)
    return ClassificationDataset(
        [base],
        data_attributes=[
            DataAttribute(base.targets, "targets"),
            DataAttribute([0] * len(base), "targets_task_labels", use_in_getitem=True),
            DataAttribute(list(row_ids), "row_ids"),
        ],
        collate_fn=PadCollate(tokenizer.pad_token_id),
    )
