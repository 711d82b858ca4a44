"""Drift detection on the benchmark streams: does the served round-1 champion see a later domain, or new classes?

    python benchmarks/drift.py --quick      # tiny random model: a smoke test of the harness
    python benchmarks/drift.py              # MiniLM, the shipped strategy (replay+ewc), ONNX export on

For each stream, round 1 is trained as `dvc repro` would train it (its model folder holds the reference and the
ONNX graphs), then served in-process by the same app `continual serve` runs (``continual.reports.drift.score_texts``: the
auto backend, the monitor's window and check). Windows of ``--window`` texts the model never trained on:

- VADER (domain-incremental): unseen tweets (round 1's own domain), then each later domain (movies, amazon, nyt);
- WordNet (class-incremental): unseen glosses of arrival 1's classes, then glosses of arrival 2's new classes.

Each window is drawn ``--draws`` times with different seeds. Target (issue "Watch the served model"): the
embedding AUC stays below the threshold (0.55) on every own-domain window and crosses it on every later one.
"""
from __future__ import annotations

import csv
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

CHECKS = ("embedding_auc", "label_psi", "length_psi", "confidence_drop")


def unseen(rows: list[dict], seen: set[str], n: int, seed: int) -> list[str]:
    texts = [r["text"] for r in rows if r["text"] not in seen]
    random.Random(seed).shuffle(texts)
    return texts[:n]


def vader_windows(size: int, seen: set[str]) -> dict[str, list[dict]]:
    from continual.cli.demo import sample_domain
    from streams import SPLIT_SEED, VADER_DOMAINS

    return {("own: " if d == VADER_DOMAINS[0] else "later: ") + d: sample_domain(d, 0, SPLIT_SEED)
            for d in VADER_DOMAINS}


def wordnet_windows(size: int, seen: set[str]) -> dict[str, list[dict]]:
    from streams import WORDNET_DIR

    def rows(n: int) -> list[dict]:
        with (WORDNET_DIR / f"arrival{n}.csv").open(encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))

    return {"own: arrival 1's classes": rows(1), "later: arrival 2's new classes": rows(2)}


def main() -> int:
    parser = harness.arguments(__doc__)
    parser.add_argument("--window", type=int, help="texts per window (default 500; quick 60)")
    parser.add_argument("--draws", type=int, help="windows drawn per source (default 5; quick 2)")
    args = parser.parse_args()
    out = harness.prepare(args)
    from continual.reports.drift import score_texts
    from continual.rounds.round import run_round
    from streams import build_stream

    quick = args.quick
    window, draws = args.window or (60 if quick else 500), args.draws or (2 if quick else 5)
    work = out / "drift_work"
    bench = {"model": "tiny" if quick else "minilm", "train": {"epochs": 2} if quick else {}}
    params = harness.training_params(args, bench, work)
    params["export"]["onnx"] = True  # serve what a round ships: int8 ONNX when the gate passes it
    results = {"machine": harness.machine(), "command": harness.command_line(), "window": window, "draws": draws,
               "streams": {}}
    sizes = {"vader": 100 if quick else 500, "wordnet": 10 if quick else 60}
    for stream, windows in (("vader", vader_windows), ("wordnet", wordnet_windows)):
        ws = build_stream(stream, work / stream, sizes[stream])
        first = ws.stream()[0]
        metrics = run_round(ws, first, params)
        seen = {r["text"] for key in ws.stream() for split in ("train", "test")
                for r in __import__("continual.arrivals.split", fromlist=["read_split"]).read_split(ws, key, split)}
        model_dir = ws.round_dir(first) / "model"
        entry = {"round": first, "acc": metrics["acc"], "windows": {}}
        for name, rows in windows(window, seen).items():
            snapshots = [score_texts(str(model_dir), unseen(rows, seen, window, seed), {}) for seed in range(draws)]
            scores = {c: [s["latest"]["scores"][c] for s in snapshots] for c in CHECKS}
            entry["windows"][name] = {"scores": scores, "backend": snapshots[0]["model"]["backend"],
                                      "texts": snapshots[0]["latest"]["texts"]}
            print(f"{stream} {name}: " + ", ".join(f"{c} {statistics.mean(v):.3f} [{min(v):.3f}, {max(v):.3f}]"
                                                   for c, v in scores.items() if None not in v), flush=True)
        results["streams"][stream] = entry
    threshold = params.get("monitoring", {}).get("thresholds", {}).get("embedding_auc", 0.55)
    met = all((max(w["scores"]["embedding_auc"]) < threshold) if name.startswith("own")
              else (min(w["scores"]["embedding_auc"]) > threshold)
              for entry in results["streams"].values() for name, w in entry["windows"].items())
    results["target_met"] = met
    harness.write_json(out, "drift", results)
    rows = [[stream, name, w["backend"], w["texts"],
             *(f"{statistics.mean(w['scores'][c]):.3f} ({min(w['scores'][c]):.3f}-{max(w['scores'][c]):.3f})"
               for c in CHECKS)]
            for stream, entry in results["streams"].items() for name, w in entry["windows"].items()]
    print(harness.markdown_table(["stream", "window", "backend", "texts", *CHECKS], rows))
    print(f"embedding AUC below {threshold} on own-domain windows and above it on later ones: {harness.verdict(met)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
