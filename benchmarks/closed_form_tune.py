"""Choose the closed-form strategies' settings on a validation split carved from train, never on test.

    python benchmarks/closed_form_tune.py                 # MiniLM, both benchmark streams
    python benchmarks/closed_form_tune.py --grid strategy.ridge.lambda=0.1,1,10 --grid strategy.ridge.projection_dim=0,2000

Each arrival's train split is split again (80/20, stratified, fixed seed): the strategy sees the arrivals one by
one (its own `fit`, the code a round runs) on the first part; the score is the final average accuracy over
the arrivals' validation parts. Embeddings of the frozen encoder are computed once per stream.
"""
from __future__ import annotations

import copy
import itertools
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

DEFAULT_GRID = {"strategy.name": ["ncm", "ridge"], "strategy.ridge.lambda": [0.1, 1.0, 10.0, 100.0],
                "strategy.ridge.projection_dim": [0, 2000, 5000]}


def main() -> None:
    parser = harness.arguments(__doc__)
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2", help="values to try (product)")
    parser.add_argument("--stream", choices=("vader", "wordnet", "both"), default="both")
    args = parser.parse_args()
    out = harness.prepare(args)
    bench = harness.settings(args, "forgetting")
    grid = dict(DEFAULT_GRID)
    for item in args.grid:
        key, _, values = item.partition("=")
        grid[key] = [harness.overrides(argparse_ns(f"{key}={v}"))[key] for v in values.split(",")]
    results = {}
    for name in ("vader", "wordnet") if args.stream == "both" else (args.stream,):
        work = harness.ROOT / "bench" / "work" / f"closed-form-{bench['mode']}-{name}"
        params = harness.training_params(args, bench, work)
        size = bench["vader_per_domain"] if name == "vader" else bench["wordnet_per_class"]
        results[name] = tune_stream(name, size, params, grid, work)
        rows = [[*(str(r["settings"][k]) for k in grid), f"{r['val_acc']:.3f}"] for r in results[name]]
        print(f"### {name}: final average validation accuracy\n\n" + harness.markdown_table([*grid, "val acc"], rows)
              + "\n", flush=True)
    harness.write_json(out, "closed_form_tune", {"grid": grid, "results": results})


def argparse_ns(item: str):
    import argparse

    return argparse.Namespace(overrides=[item])


def tune_stream(name: str, size: int, params: dict, grid: dict, work: Path) -> list[dict]:
    import torch
    from streams import build_stream

    from continual.arrivals.split import read_split
    from continual.model.encoder import embed_rows, new_classifier
    from continual.model.pretrained import base_model_path
    from continual.rounds.round import labels_in_order
    from continual.strategies import make_strategy

    stream = build_stream(name, work / "stream", size)
    keys = stream.stream()
    labels = labels_in_order(stream, keys)
    model, tokenizer = new_classifier(base_model_path(params["model"]["base"]), labels, int(params["model"]["max_length"]))
    fit_parts, val_parts = [], []
    for key in keys:
        rows = read_split(stream, key, "train")
        random.Random(f"val:{key}").shuffle(rows)
        cut = len(rows) // 5
        embedded = embed_rows(model, tokenizer, [r["text"] for r in rows], 64).float()
        targets = torch.tensor([labels.index(r["label"]) for r in rows])
        val_parts.append((embedded[:cut], targets[:cut]))
        fit_parts.append((embedded[cut:], targets[cut:]))
    results, seen = [], set()
    for values in itertools.product(*grid.values()):
        settings = dict(zip(grid, values))
        p = copy.deepcopy(params)
        for key, value in settings.items():
            *path, leaf = key.split(".")
            section = p
            for part in path:
                section = section[part]
            section[leaf] = value
        if p["strategy"]["name"] == "ncm":  # ridge settings do not apply: one row is enough
            settings = {k: (v if not k.startswith("strategy.ridge") else "-") for k, v in settings.items()}
            if tuple(settings.values()) in seen:
                continue
            seen.add(tuple(settings.values()))
        strategy = make_strategy(p)
        model.projection = None
        strategy.prepare(model, len(labels))
        with torch.no_grad():
            for embedded, targets in fit_parts:
                strategy.fit(model, model.features(embedded).double(), targets)
            accs = [float((model.head(model.features(e)).argmax(-1) == t).float().mean()) for e, t in val_parts]
        results.append({"settings": settings, "val_acc": sum(accs) / len(accs), "per_arrival": accs})
    return results


if __name__ == "__main__":
    main()
