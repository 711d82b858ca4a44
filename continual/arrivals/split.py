"""Which rows of a file an arrival keeps (de-duplication against earlier arrivals and within the file,
relabels), how it splits them into train and test, and how a split of a registered arrival is read back."""
from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from continual.arrivals.jsonl import read_jsonl
from continual.arrivals.parse import ArrivalError, Row, file_error
from continual.workspace.layout import Workspace

SPLITS = ("train", "test")
EXAMPLES_SHOWN = 3


@dataclass
class Duplicates:
    policy: str
    seen_before: int = 0  # texts already in an earlier arrival (train or test)
    within_file: int = 0  # repeats of an earlier row of the same file
    conflicting_labels: int = 0  # within-file repeats whose label differs from the first occurrence
    dropped: int = 0
    examples: list[str] = field(default_factory=list)


@dataclass
class Relabels:
    """Texts of earlier arrivals that come back with another label than their latest one: corrections.
    ``keep`` (ingest.relabels): a train row of this arrival with the new label, never a test row (an earlier
    arrival holds the text); the earlier arrival keeps its old label. ``drop``: the earlier label stands."""
    policy: str
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.policy == "keep":
            rule = ("kept as train rows of this arrival with the new label (ingest.relabels=keep): rounds learn "
                    "the correction from now on; the earlier arrival keeps its old label; none is a test row")
        else:
            rule = "DROPPED (ingest.relabels=drop): the earlier label stands; set ingest.relabels: keep to correct it"
        return f"{self.count} texts of earlier arrivals came back with another label: {rule}"


def read_split(ws: Workspace, key: str, split: str) -> list[dict[str, str]]:
    """The rows (id, text, label) of one split of a registered arrival."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    return read_jsonl(ws.arrival_split_file(key, split))


def _normalised(text: str) -> str:
    """What counts as the same text: case and whitespace runs do not matter."""
    return " ".join(text.split()).casefold()


def earlier_arrivals(ws: Workspace, keys: list[str]) -> tuple[dict[str, tuple[str, str]], set[str]]:
    """(normalised text -> (its latest label, the arrival that gave it), every label) of the arrivals ``keys``."""
    texts: dict[str, tuple[str, str]] = {}
    labels: set[str] = set()
    for key in keys:
        if not ws.arrival_dir(key).is_dir():
            raise ArrivalError(f"arrival {key} is missing from data/arrivals/: run `dvc checkout` or `dvc pull`")
        for split in SPLITS:
            for row in read_split(ws, key, split):
                texts[_normalised(row["text"])] = (row["label"], key)  # a later arrival's label is the latest
                labels.add(row["label"])
    return texts, labels


def dedupe(rows: list[Row], earlier: dict[str, tuple[str, str]], policy: str,
           relabel_policy: str) -> tuple[list[Row], list[Row], Duplicates, Relabels]:
    """(rows to split, relabelled rows for train only, duplicates, relabels)."""
    dups, relabels = Duplicates(policy=policy), Relabels(policy=relabel_policy)
    first: dict[str, Row] = {}
    kept: list[Row] = []
    corrected: list[Row] = []
    for row in rows:
        norm = _normalised(row.text)
        if norm in first:  # checked first: a relabel repeated within the file is a repeat, not a second relabel
            dups.within_file += 1
            original = first[norm]
            note = f"line {row.line} repeats line {original.line}"
            if original.label != row.label:
                dups.conflicting_labels += 1
                note += f" with label {row.label!r} instead of {original.label!r}"
        elif norm in earlier and earlier[norm][0] != row.label:
            relabels.count += 1
            old, key = earlier[norm]
            if len(relabels.examples) < EXAMPLES_SHOWN:
                relabels.examples.append(f"line {row.line}: {row.text[:60]!r} was {old!r} in {key}, now {row.label!r}")
            if relabel_policy == "keep":
                first[norm] = row
                corrected.append(row)
            continue
        elif norm in earlier:
            dups.seen_before += 1
            note = f"line {row.line} is already in an earlier arrival: {row.text[:60]!r}"
        else:
            first[norm] = row
            kept.append(row)
            continue
        if len(dups.examples) < EXAMPLES_SHOWN:
            dups.examples.append(note)
        if policy == "drop":
            dups.dropped += 1
        else:
            kept.append(row)
    return kept, corrected, dups, relabels


def check_label_counts(source: Path, rows: list[Row], min_per_label: int, dropped: int) -> None:
    # A label needs one train and one test example whatever min_per_label says.
    need = max(2, min_per_label)
    after = f" after dropping {dropped} duplicates" if dropped else ""
    if not rows:
        raise file_error(source, None, f"no rows left{after}")
    short = {label: n for label, n in sorted(Counter(r.label for r in rows).items()) if n < need}
    if short:
        counts = ", ".join(f"label {label!r} has {n}" for label, n in short.items())
        raise file_error(
            source, None, f"too few examples to split{after}: {counts}; every label needs at least {need} "
            f"(ingest.min_per_label is {min_per_label})"
        )


def stratified_split(rows: list[Row], test_fraction: float, rng: random.Random) -> tuple[list[Row], list[Row]]:
    """Stratified: each label holds out round(n * test_fraction) rows, at least one, leaving at least one."""
    by_label: dict[str, list[Row]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r.id):  # sorted first so file order does not move the split
        by_label[row.label].append(row)
    train: list[Row] = []
    test: list[Row] = []
    for label in sorted(by_label):
        group = by_label[label]
        rng.shuffle(group)
        n_test = min(len(group) - 1, max(1, round(len(group) * test_fraction)))
        test += group[:n_test]
        train += group[n_test:]
    return sorted(train, key=lambda r: r.id), sorted(test, key=lambda r: r.id)
