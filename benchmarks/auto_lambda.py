"""λ chosen from the sums against every fixed λ, on the frozen encoder, on test (this comparison only).

    python benchmarks/auto_lambda.py                  # MiniLM, both streams, full and cut to 60 rows per label
    python benchmarks/auto_lambda.py --quick          # tiny random model: a smoke test

The stream arrives as a `ridge` round sees it: each arrival's features are added to the running sums XᵀX,
XᵀY, and the head is solved after every arrival. Each criterion of `continual/model/ridge.py`
picks λ from the sums after each arrival; the fixed λ are the grid a user would try. The figure is the final
average test accuracy over the stream's arrivals. "cut" keeps the first `--cut` train rows of each label in
each arrival (at 10, fewer rows than the embedding has dimensions over the whole stream). Embeddings are
computed once per stream. The target: auto within 0.5 points of the best fixed λ.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

FIXED = (0.1, 1.0, 10.0, 100.0)


def main() -> None:
    parser = harness.arguments(__doc__)
    parser.add_argument("--stream", choices=("vader", "wordnet", "both"), default="both")
    parser.add_argument("--cut", default="60,10", help="comma-separated: train rows per label per arrival in the cut "
                                                         "streams (10: fewer rows than dimensions over the whole stream)")
    args = parser.parse_args()
    out = harness.prepare(args)
    bench = harness.settings(args, "forgetting")
    print(f"machine: {harness.describe(harness.machine())}\ncommand: {harness.command_line()}\n", flush=True)
    results = {}
    for name in ("vader", "wordnet") if args.stream == "both" else (args.stream,):
        work = harness.ROOT / "bench" / "work" / f"auto-lambda-{bench['mode']}-{name}"
        params = harness.training_params(args, bench, work)
        size = bench["vader_per_domain"] if name == "vader" else bench["wordnet_per_class"]
        arrivals = embedded_stream(name, size, params, work)
        for cut in (None, *(int(c) for c in args.cut.split(","))):
            label = f"{name}" + (f" (first {cut} per label)" if cut else "")
            results[label] = compare(arrivals, cut)
    rows = []
    for label, r in results.items():
        best = max(FIXED, key=lambda lam: r["fixed"][lam])
        gap = 100 * (r["gcv"]["acc"] - r["fixed"][best])
        rows.append([label, r["rows"], *(f"{r['fixed'][lam]:.3f}" for lam in FIXED),
                     *(f"{r[c]['acc']:.3f} (λ {r[c]['lambda'][-1]:.3g})" for c in ("gcv", "evidence", "gcv_no_floor")),
                     f"{gap:+.1f} ({harness.verdict(gap >= -0.5)})"])
    print(harness.markdown_table(["stream", "train rows", *(f"λ={lam:g}" for lam in FIXED), "auto (GCV, floor)",
                                  "evidence (same floor)", "GCV, no floor", "auto − best fixed, points"], rows), flush=True)
    harness.write_json(out, "auto_lambda", {"mode": bench["mode"], "results": results})


def embedded_stream(name: str, size: int, params: dict, work: Path) -> list[dict]:
    """Per arrival: train and test features of the frozen encoder, label ids, in stream order."""
    import torch
    from streams import build_stream

    from continual.arrivals.split import read_split
    from continual.model.encoder import embed_rows, new_classifier
    from continual.model.pretrained import base_model_path
    from continual.rounds.round import labels_in_order

    stream = build_stream(name, work / "stream", size)
    keys = stream.stream()
    labels = labels_in_order(stream, keys)
    model, tokenizer = new_classifier(base_model_path(params["model"]["base"]), labels,
                                      int(params["model"]["max_length"]))
    arrivals = []
    for key in keys:
        part = {}
        for split in ("train", "test"):
            rows = read_split(stream, key, split)
            part[split] = (embed_rows(model, tokenizer, [r["text"] for r in rows], 64),
                           torch.tensor([labels.index(r["label"]) for r in rows]))
        arrivals.append(part)
    return arrivals


def compare(arrivals: list[dict], cut: int | None) -> dict:
    import torch

    from continual.model.ridge import choose_lambda, solve_head, with_bias

    classes = int(max(int(a[s][1].max()) for a in arrivals for s in ("train", "test"))) + 1
    gram = xty = None
    rows = 0
    choices: dict[str, list[float]] = {"gcv": [], "evidence": [], "gcv_no_floor": []}
    for arrival in arrivals:
        x, y = arrival["train"]
        if cut:
            keep = torch.cat([(y == c).nonzero().flatten()[:cut] for c in y.unique()]).sort().values
            x, y = x[keep], y[keep]
        rows += len(y)
        xb = with_bias(x)
        onehot = torch.nn.functional.one_hot(y, classes).double()
        gram = (0 if gram is None else gram) + xb.T @ xb
        xty = (0 if xty is None else xty) + xb.T @ onehot
        for criterion in choices:
            name, _, bare = criterion.partition("_no_floor")
            choices[criterion].append(choose_lambda(gram, xty, name, floor=not bare and criterion == name))

    def final_acc(lam: float) -> float:
        weight, bias = solve_head(gram, xty, lam)
        accs = [float(((a["test"][0] @ weight.T + bias).argmax(-1) == a["test"][1]).double().mean()) for a in arrivals]
        return sum(accs) / len(accs)

    return {"rows": rows, "fixed": {lam: final_acc(lam) for lam in FIXED},
            **{c: {"lambda": lams, "acc": final_acc(lams[-1])} for c, lams in choices.items()}}


if __name__ == "__main__":
    main()
