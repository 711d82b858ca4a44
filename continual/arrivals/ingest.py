"""`continual ingest`: a labelled text file becomes a registered arrival: validated, de-duplicated, split,
tracked by DVC.

Every check runs on the file in memory before anything is written (continual.arrivals.parse and .split), so
a rejected file leaves the workspace exactly as it was. The writing is undone on a failure, and rolled back
or finished after a kill (continual.arrivals.journal).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
import sys
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from continual.arrivals.journal import ingest_lock, recover_interrupted_ingest, register
from continual.arrivals.jsonl import encode_jsonl
from continual.arrivals.parse import INVISIBLE, MAX_LABEL_CHARS, Row, file_error, parse_rows, quoted, read_source
from continual.arrivals.split import (SPLITS, Duplicates, Relabels, check_label_counts, dedupe, earlier_arrivals,
                                      stratified_split)
from continual.workspace.layout import ARRIVAL_NAME, Workspace

# A sure lower bound on tokens for word-piece and BPE tokenizers: none merges across a word and a
# punctuation mark; +2 for [CLS]/[SEP] or their like.
_PIECES = re.compile(r"\w+|[^\w\s]")


@dataclass
class IngestReport:
    key: str
    source: str
    rows: int  # rows read from the file, before duplicates were dropped
    train: int
    test: int
    label_counts: dict[str, dict[str, int]]  # split -> label -> count
    duplicates: Duplicates
    new_labels: list[str]  # labels no earlier arrival had
    warnings: list[str] = field(default_factory=list)  # kept, but likely not what was meant
    relabels: Relabels = field(default_factory=lambda: Relabels(policy="keep"))

    def summary(self) -> str:
        labels = sorted(set(self.label_counts["train"]) | set(self.label_counts["test"]))
        per_label = ", ".join(
            f"{lab} {self.label_counts['train'].get(lab, 0)}/{self.label_counts['test'].get(lab, 0)}" for lab in labels
        )
        d = self.duplicates
        lines = [
            f"Registered {self.key} from {self.source}: {self.rows} rows -> {self.train} train, {self.test} test",
            f"  labels (train/test): {per_label}",
            f"  duplicates: {d.seen_before} seen in earlier arrivals, {d.within_file} repeated within the file"
            f" ({d.conflicting_labels} with a different label); {d.dropped} dropped (ingest.duplicates={d.policy})",
            *(f"    {example}" for example in d.examples),
        ]
        if self.relabels.count:
            lines.append(f"  relabels: {self.relabels.summary()}")
            lines += [f"    {example}" for example in self.relabels.examples]
        if self.new_labels:
            lines.append(f"  new labels: {', '.join(self.new_labels)}")
        lines += [f"  warning: {warning}" for warning in self.warnings]
        return "\n".join(lines)


def ingest_file(ws: Workspace, source: Path, name: str, params: dict[str, Any]) -> IngestReport:
    """Validate ``source`` and register it as the next arrival ``<NNNN>-<name>`` (raises ArrivalError).

    Ingests into one workspace run one at a time: a second waits for the first to finish, then sees its
    arrival (its key, its texts for de-duplication). An earlier ingest that was killed half way is rolled
    back (or finished) first, and said so on stderr."""
    with ingest_lock(ws):
        note = recover_interrupted_ingest(ws)
        if note:
            print(f"continual ingest: {note}", file=sys.stderr)
        return _ingest(ws, Path(source), name, params)


def _ingest(ws: Workspace, source: Path, name: str, params: dict[str, Any]) -> IngestReport:
    cfg = params["ingest"]
    _check_params(cfg)
    old_keys = ws.stream()
    _check_name(ws, source, name, old_keys)
    key = ws.next_key(name)

    data = read_source(source)
    rows = parse_rows(source, data, name, int(cfg["max_text_bytes"]), cfg.get("max_label_chars", MAX_LABEL_CHARS))
    earlier_texts, earlier_labels = earlier_arrivals(ws, old_keys)
    kept, corrected, duplicates, relabels = dedupe(rows, earlier_texts, cfg["duplicates"], cfg.get("relabels", "keep"))
    if not kept and corrected:
        raise file_error(source, None, f"all {len(corrected)} rows kept are relabelled texts of earlier arrivals: "
                         "an arrival needs new texts too, for its test split (relabels are train rows only)")
    check_label_counts(source, kept, cfg["min_per_label"], duplicates.dropped)
    train, test = stratified_split(kept, cfg["test_fraction"], random.Random(f"{params['seed']}:{key}"))
    train = sorted(train + corrected, key=lambda r: r.id)
    warnings = _warnings(train + test, earlier_labels, int(params["model"]["max_length"]))
    if relabels.count and relabels.policy == "drop":
        warnings.append(relabels.summary())

    label_counts = {
        split: dict(sorted(Counter(r.label for r in part).items())) for split, part in zip(SPLITS, (train, test))
    }
    record = {
        "key": key,
        "name": name,
        "index": len(old_keys) + 1,
        "source": source.name,
        "source_sha256": hashlib.sha256(data).hexdigest(),
        "rows": {"read": len(rows), "kept": len(kept), "train": len(train), "test": len(test)},
        "labels": label_counts,
        "duplicates": dataclasses.asdict(duplicates),
        "relabels": dataclasses.asdict(relabels),
        "seed": params["seed"],
        "test_fraction": cfg["test_fraction"],
        "warnings": warnings,
    }
    # Encoded before anything is written: an encoding failure must not leave half an arrival.
    files = {
        ws.arrival_split_file(key, "train"): encode_jsonl(_plain(r) for r in train),
        ws.arrival_split_file(key, "test"): encode_jsonl(_plain(r) for r in test),
        ws.arrival_record_file(key): (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
    }
    register(ws, key, files, old_keys, source)
    return IngestReport(
        key=key,
        source=source.name,
        rows=len(rows),
        train=len(train),
        test=len(test),
        label_counts=label_counts,
        duplicates=duplicates,
        new_labels=sorted({r.label for r in train + test} - earlier_labels),
        warnings=warnings,
        relabels=relabels,
    )


def _check_params(cfg: dict[str, Any]) -> None:
    if not isinstance(cfg.get("max_text_bytes"), int) or cfg["max_text_bytes"] < 1:
        raise ValueError(f"params: ingest.max_text_bytes must be a positive integer, not {cfg.get('max_text_bytes')!r}")
    if cfg["duplicates"] not in ("drop", "keep"):
        raise ValueError(f"params: ingest.duplicates must be drop or keep, not {cfg['duplicates']!r}")
    max_label = cfg.get("max_label_chars", MAX_LABEL_CHARS)
    if isinstance(max_label, bool) or not isinstance(max_label, int) or max_label < 1:
        raise ValueError(f"params: ingest.max_label_chars must be a positive integer, not {max_label!r}")
    if cfg.get("relabels", "keep") not in ("drop", "keep"):
        raise ValueError(f"params: ingest.relabels must be keep or drop, not {cfg['relabels']!r}")
    if not 0 < cfg["test_fraction"] < 1:
        raise ValueError(f"params: ingest.test_fraction must be between 0 and 1, not {cfg['test_fraction']!r}")


def _check_name(ws: Workspace, source: Path, name: str, old_keys: list[str]) -> None:
    if not ARRIVAL_NAME.fullmatch(name):
        raise file_error(
            source, None, f"arrival name {quoted(name)} is not allowed: use 1-63 lowercase ASCII letters, digits, "
            "'-' or '_', starting with a letter or digit (the name becomes a folder name)"
        )
    used = [key for key in old_keys if ws.arrival_name(key) == name]
    if used:
        raise file_error(source, None, f"arrival name {name!r} is already used by {used[0]}; choose another --name")
    key = ws.next_key(name)
    for path in (ws.arrival_dir(key), ws.arrival_dvc_file(key)):
        if path.exists():
            where = path.relative_to(ws.root)
            raise file_error(source, None,
                             f"{where} already exists but is not registered in stream.yaml; move it away")


def _plain(row: Row) -> dict[str, str]:
    return {"id": row.id, "text": row.text, "label": row.label}


def _warnings(rows: list[Row], earlier_labels: set[str], max_length: int) -> list[str]:
    """What is kept but likely not meant: near-identical labels, texts the model reads only the start of."""
    warnings = []
    spellings: dict[str, set[str]] = defaultdict(set)
    for label in {r.label for r in rows} | earlier_labels:
        spellings[unicodedata.normalize("NFC", INVISIBLE.sub("", label)).casefold()].add(label)
    ours = {r.label for r in rows}
    for group in sorted(sorted(g) for g in spellings.values() if len(g) > 1 and g & ours):
        warnings.append(f"labels that differ only in case or invisible characters: {', '.join(map(quoted, group))}"
                        " (they are different classes)")
    long = sum(len(_PIECES.findall(r.text)) + 2 > max_length for r in rows)
    if long:
        texts = "1 text is" if long == 1 else f"{long} texts are"
        warnings.append(f"{texts} longer than model.max_length ({max_length} tokens): the model reads only the start")
    return warnings
