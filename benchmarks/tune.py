"""Sweep training parameters on one stream: the record behind the defaults shipped in params.yaml.

    python benchmarks/tune.py --stream wordnet --per-class 40 --strategies ewc \\
        --grid strategy.ewc.lambda=1e3,1e5,1e6,1e7
    python benchmarks/tune.py --stream vader --per-domain 200 --strategies naive,replay+ewc,joint \\
        --grid train.lr=5e-5,1e-4,2e-4 --grid train.epochs=2,3

Every combination of the --grid values (on top of any --set) runs the given strategies over the same fixed
stream and seeds, with forgetting.py's harness. Scores are on a validation split carved from each arrival's
train split (the test splits are not even written), so a default chosen here was never chosen on test. Prints one row per combination and strategy, and writes
tune_<stream>.json under --out, rewritten after every run.
"""
from __future__ import annotations

import copy
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import forgetting  # noqa: E402
import harness  # noqa: E402


def main() -> None:
    parser = harness.arguments(__doc__)
    parser.add_argument("--stream", choices=("vader", "wordnet"), required=True)
    parser.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2,...",
                        help="a parameter and the values to try (repeatable: the grid is their product)")
    parser.add_argument("--seeds", default="1", help="comma-separated training seeds")
    parser.add_argument("--strategies", default="naive,ewc,replay+ewc,joint")
    forgetting.stream_arguments(parser)
    args = parser.parse_args()
    out = harness.prepare(args)
    bench = harness.settings(args, "forgetting")
    size = forgetting.stream_size(args, bench, args.stream)
    mem_fraction = args.mem_fraction if args.mem_fraction is not None else bench["mem_fraction"]
    axes = [(key, values.split(",")) for key, _, values in (g.partition("=") for g in args.grid)]
    print(f"machine: {harness.describe(harness.machine())}\ncommand: {harness.command_line()}\n", flush=True)

    points: list[dict] = []
    for combo in itertools.product(*(values for _, values in axes)):
        setting = {key: value for (key, _), value in zip(axes, combo)}
        point_args = copy.copy(args)
        point_args.overrides = args.overrides + [f"{k}={v}" for k, v in setting.items()]
        label = " ".join(f"{k}={v}" for k, v in setting.items())
        work = harness.ROOT / "bench" / "work" / f"tune-{args.stream}-{out.name}-{len(points)}"  # sweeps side by side
        params = harness.training_params(point_args, bench, work)
        print(f"-- {label}", file=sys.stderr, flush=True)
        point = {"setting": setting, "result": None}
        points.append(point)

        def checkpoint(partial: dict, point: dict = point) -> None:
            point["result"] = partial
            harness.write_json(out, f"tune_{args.stream}", {"stream": args.stream, "size": size, "points": points,
                                                            "overrides": harness.overrides(args)})

        forgetting.run_benchmark(args.stream, size, args.strategies.split(","),
                                 [int(s) for s in args.seeds.split(",")], mem_fraction, params, work, checkpoint,
                                 validation=True)
    print(report(points), flush=True)


def report(points: list[dict]) -> str:
    rows = []
    for point in points:
        label = ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in point["setting"].items())
        for r in point["result"]["summary"]:
            ratio = f"{r['ratio_to_joint']:.2f}" if r["ratio_to_joint"] is not None else "-"
            rows.append([label, r["strategy"], r["seeds"], f"{r['avg_acc']:.3f} ± {r['avg_acc_sd']:.3f}",
                         f"{r['forgetting_avg']:.3f}", f"{r['forgetting_max']:.3f}", f"{r['bwt']:.3f}", ratio,
                         f"{r['train_seconds']:.0f}"])
    return harness.markdown_table(["setting", "strategy", "seeds", "final avg acc", "avg forgetting",
                                   "max forgetting", "BWT", "acc / joint", "train s"], rows)


if __name__ == "__main__":
    main()
