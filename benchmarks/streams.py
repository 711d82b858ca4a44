"""The real streams the benchmarks train on, and one strategy's run over one of them.

- VADER (domain-incremental): the four sentiment domains, each an arrival with labels neg/neu/pos.
- WordNet (class-incremental): noun glosses, 4 new lexicographer classes per arrival (data/wordnet/).

A stream is written once as a bare workspace (arrival folders and stream.yaml, no git, no DVC), split into
train and test exactly as `continual ingest` would split it with the shipped seed. Every strategy and seed then
runs on a copy of it, so the test splits are the same for all of them.
"""
from __future__ import annotations

import copy
import csv
import random
import shutil
import time
from pathlib import Path

from continual.cli.compare import scratch_workspace
from continual.cli.demo import sample_domain
from continual.arrivals.parse import Row
from continual.arrivals.split import stratified_split  # the split ingest makes, seeded by arrival key
from continual.workspace.files import write_atomic
from continual.params import load_params
from continual.workspace.layout import Workspace

ROOT = Path(__file__).resolve().parents[1]
VADER_DOMAINS = ("tweets", "movies", "amazon", "nyt")
WORDNET_DIR = ROOT / "data" / "wordnet"
SPLIT_SEED = load_params()["seed"]  # the shipped seed: fixed test splits, whatever seed a run trains with


def vader_arrivals(per_domain: int, halves: bool = False) -> list[tuple[str, list[dict]]]:
    """(name, rows) per domain; with ``halves`` each domain arrives in two halves (8 arrivals)."""
    arrivals = []
    for domain in VADER_DOMAINS:
        rows = sample_domain(domain, per_domain, SPLIT_SEED)
        if halves:
            middle = len(rows) // 2
            arrivals += [(f"{domain}-a", rows[:middle]), (f"{domain}-b", rows[middle:])]
        else:
            arrivals.append((domain, rows))
    return arrivals


def wordnet_arrivals(per_class: int) -> list[tuple[str, list[dict]]]:
    """(name, rows) per arrival file, ``per_class`` glosses of each of its 4 classes drawn with a fixed seed."""
    arrivals = []
    for path in sorted(WORDNET_DIR.glob("arrival*.csv")):
        with path.open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        labels = sorted({r["label"] for r in rows})
        picked = []
        for label in labels:
            group = [r for r in rows if r["label"] == label]
            random.Random(f"{SPLIT_SEED}:{label}").shuffle(group)
            picked += group[:per_class]
        arrivals.append((f"wordnet-{path.stem.removeprefix('arrival')}", picked))
    return arrivals


def write_stream(folder: Path, arrivals: list[tuple[str, list[dict]]], test_fraction: float,
                 validation: bool = False) -> Workspace:
    """Arrival folders in the ingested layout; texts already seen earlier in the stream are dropped.

    With ``validation`` the test split is left out altogether, and a validation split carved from each
    arrival's train split takes its place: what tuning measures, so that no setting is chosen on test."""
    shutil.rmtree(folder, ignore_errors=True)
    ws = Workspace.at(folder)
    seen: set[str] = set()
    keys = []
    for i, (name, rows) in enumerate(arrivals, 1):
        key = f"{i:04d}-{name}"
        fresh = []
        for n, r in enumerate(rows, 1):
            if r["text"] not in seen:
                seen.add(r["text"])
                fresh.append(Row(id=r["id"], text=r["text"], label=r["label"], line=n))
        train, test = stratified_split(fresh, test_fraction, random.Random(f"{SPLIT_SEED}:{key}"))
        if validation:
            train, test = stratified_split(train, test_fraction, random.Random(f"{SPLIT_SEED}:validation:{key}"))
        ws.arrival_dir(key).mkdir(parents=True)
        for split, part in (("train", train), ("test", test)):
            write_atomic(ws.arrival_split_file(key, split), "".join(r.as_json() + "\n" for r in part).encode())
        keys.append(key)
    ws.stream_file.write_text(ws.stream_text(keys))
    return ws


def build_stream(name: str, folder: Path, size: int, halves: bool = False, validation: bool = False) -> Workspace:
    """``vader`` (size = examples per domain) or ``wordnet`` (size = glosses per class)."""
    arrivals = vader_arrivals(size, halves) if name == "vader" else wordnet_arrivals(size)
    return write_stream(folder, arrivals, float(load_params()["ingest"]["test_fraction"]), validation)


def train_rows(ws: Workspace) -> int:
    return sum(1 for key in ws.stream() for _ in ws.arrival_split_file(key, "train").open())


def rounds(stream: Workspace, params: dict, strategy: str, seed: int, folder: Path):
    """Yield each round's metrics of ``stream`` under one strategy and seed, trained in a scratch copy.

    A round folder is dropped as soon as the next round has read it (a MiniLM round is ~90 MB), and the
    scratch copy once the last round is done.
    """
    from continual.rounds.round import run_round

    scratch = scratch_workspace(stream, folder)
    p = copy.deepcopy(params)
    p["strategy"]["name"], p["seed"] = strategy, seed
    keys = scratch.stream()
    for i, key in enumerate(keys):
        yield run_round(scratch, key, p)
        if i:
            shutil.rmtree(scratch.round_dir(keys[i - 1]))
    shutil.rmtree(folder)


ROUND_FIGURES = ("round", "key", "avg_acc", "forgetting_avg", "forgetting_max", "bwt", "acc_before_update",
                 "examples", "train_rows", "examples_per_s", "train_seconds", "wall_seconds", "buffer_size",
                 "acc", "int8_acc", "int8_drop", "int8_agreement", "export_seconds")  # the last two: rounds that exported ONNX (export.onnx)


def run_strategy(stream: Workspace, params: dict, strategy: str, seed: int, folder: Path) -> dict:
    """The whole stream under one strategy and seed: final figures, curves over rounds, per-round figures."""
    started = time.perf_counter()
    metrics = list(rounds(stream, params, strategy, seed, folder))
    last = metrics[-1]
    return {"strategy": strategy, "seed": seed, "avg_acc": last["avg_acc"], "forgetting_avg": last["forgetting_avg"],
            "forgetting_max": last["forgetting_max"], "bwt": last["bwt"], "buffer_size": last["buffer_size"],
            "accuracy_matrix": last["accuracy_matrix"], "arrivals": last["arrivals"],
            "train_seconds": sum(m["train_seconds"] for m in metrics), "wall_seconds": time.perf_counter() - started,
            "curve": [m["forgetting_avg"] for m in metrics], "acc_curve": [m["avg_acc"] for m in metrics],
            "rounds": [{k: m[k] for k in ROUND_FIGURES if k in m} for m in metrics]}
