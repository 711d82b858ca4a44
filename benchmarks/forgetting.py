"""Forgetting on real streams: naive, replay, ewc, replay+ewc, joint and the frozen-encoder ridge and ncm.

    python benchmarks/forgetting.py --quick                      # tiny random model: a smoke test
    python benchmarks/forgetting.py                              # MiniLM, sizes from benchmarks/params.yaml
    python benchmarks/forgetting.py --stream vader --seeds 1,2,3 --per-domain 1000 --device cuda

Streams: VADER's four sentiment domains (domain-incremental) and WordNet noun glosses, 4 new classes per
arrival (class-incremental). Each stream's test splits are fixed once; every strategy and seed trains on a
scratch copy with `continual.rounds.round.run_round`, the function `dvc repro` runs. The replay buffer holds
`mem_fraction` of the stream's train rows. Prints one markdown table per stream and the targets:

- the shipped default (continual/template/params.yaml): at least the frozen ridge (auto λ), at least 97% of
  joint, at most 1/4 of joint's compute over the stream, and on the domain-incremental stream at most 1.5
  points of average forgetting;
- replay+ewc beats the frozen encoder with a ridge head by >= 3 points, and joint beats ridge.

Writes forgetting_<stream>.json and forgetting_<stream>.png (curves per strategy) under --out.
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

TARGETS = {"vader": "domain", "wordnet": "class"}
STYLES = {"naive": "o-", "replay": "s--", "ewc": "^:", "replay+ewc": "D-.", "joint": "x-",  # overlaps stay visible
          "ridge": "v--", "ncm": "P:", "adapt": "*-"}
ORDER = ["naive", "replay", "ewc", "replay+ewc", "adapt", "joint", "ridge", "ncm"]


def main() -> None:
    parser = harness.arguments(__doc__)
    parser.add_argument("--stream", choices=("vader", "wordnet", "both"), default="both")
    parser.add_argument("--seeds", help="comma-separated training seeds")
    parser.add_argument("--strategies", help="comma-separated strategies")
    stream_arguments(parser)
    parser.add_argument("--merge", nargs="+", type=Path, metavar="JSON",
                        help="combine forgetting_<stream>.json files of one stream (e.g. one per seed or machine) "
                             "into one table, JSON and plot under --out; trains nothing")
    args = parser.parse_args()
    out = harness.prepare(args)
    if args.merge:
        return merge(args.merge, out)
    bench = harness.settings(args, "forgetting")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else bench["seeds"]
    strategies = args.strategies.split(",") if args.strategies else bench["strategies"]
    mem_fraction = args.mem_fraction if args.mem_fraction is not None else bench["mem_fraction"]
    print(f"machine: {harness.describe(harness.machine())}\ncommand: {harness.command_line()}\n", flush=True)

    for stream_name in ("vader", "wordnet") if args.stream == "both" else (args.stream,):
        # One work folder per stream, seeds and strategies, so runs of other seeds or strategies can share the machine.
        tag = f"{'_'.join(map(str, seeds))}-{'_'.join(s.replace('+', '') for s in strategies)}"
        work = harness.ROOT / "bench" / "work" / f"forgetting-{bench['mode']}-{stream_name}-{tag}"
        params = harness.training_params(args, bench, work)
        header = {"mode": bench["mode"], "model": params["model"]["base"], "overrides": harness.overrides(args)}
        name = f"forgetting_{stream_name}"
        result = run_benchmark(stream_name, stream_size(args, bench, stream_name), strategies, seeds, mem_fraction, params, work,
                               lambda partial: harness.write_json(out, name, {**header, **partial}))
        result.update(header)
        print(report(result), flush=True)
        plot(result, out / f"forgetting_{stream_name}.png")


def stream_arguments(parser) -> None:
    """The size flags of the two streams (default: benchmarks/params.yaml)."""
    parser.add_argument("--per-domain", type=int, help="VADER examples per domain")
    parser.add_argument("--per-class", type=int, help="WordNet glosses per class")
    parser.add_argument("--mem-fraction", type=float, help="replay buffer as a share of the stream's train rows")


def stream_size(args, bench: dict, stream_name: str) -> int:
    if stream_name == "vader":
        return args.per_domain or bench["vader_per_domain"]
    return args.per_class or bench["wordnet_per_class"]


def run_benchmark(stream_name: str, size: int, strategies: list[str], seeds: list[int], mem_fraction: float,
                  params: dict, work: Path, checkpoint, validation: bool = False) -> dict:
    """Seed by seed, every strategy; ``checkpoint`` gets the result so far after every run (a run cut short
    by a time limit still leaves every finished seed in the JSON)."""
    from streams import build_stream, run_strategy, train_rows

    stream = build_stream(stream_name, work / "stream", size, validation=validation)
    seen = train_rows(stream)
    params["strategy"]["replay"]["mem_size"] = max(1, int(mem_fraction * seen))
    result = {"stream": stream_name, "size": size, "scored_on": "validation" if validation else "test",
              "train_rows_seen": seen, "test_rows": test_rows(stream),
              "mem_size": params["strategy"]["replay"]["mem_size"], "train": params["train"],
              "strategy_params": params["strategy"], "runs": []}
    for seed in seeds:
        for strategy in strategies:
            print(f"-- {stream_name}: {strategy}, seed {seed}", file=sys.stderr, flush=True)
            result["runs"].append(run_strategy(stream, params, strategy, seed,
                                               work / "runs" / f"{strategy.replace('+', '_')}-{seed}"))
            result.update(seeds=sorted({r["seed"] for r in result["runs"]}), summary=summarise(result["runs"]))
            checkpoint(result)
    return result


def merge(paths: list[Path], out: Path) -> None:
    import json

    parts = [json.loads(p.read_text()) for p in paths]
    streams = {p["stream"] for p in parts}
    if len(streams) != 1 or len({(p["size"], p["mem_size"]) for p in parts}) != 1:
        sys.exit(f"--merge: the files must hold one stream at one size and buffer, not {streams}")
    result = {k: v for k, v in parts[0].items() if k not in ("command", "machine")}
    result["runs"] = [run for p in parts for run in p["runs"]]
    result.update(seeds=sorted({r["seed"] for r in result["runs"]}), summary=summarise(result["runs"]),
                  merged_from=[{"file": str(p), "command": part["command"], "machine": part["machine"]}
                               for p, part in zip(paths, parts)])
    print(report(result), flush=True)
    harness.write_json(out, f"forgetting_{result['stream']}", result)
    plot(result, out / f"forgetting_{result['stream']}.png")


def test_rows(stream) -> dict:
    return {key: sum(1 for _ in stream.arrival_split_file(key, "test").open()) for key in stream.stream()}


def summarise(runs: list[dict]) -> list[dict]:
    """Mean and spread (population SD) over seeds per strategy, and the ratio to joint's mean accuracy."""
    from continual.cli.compare import summarise as over_seeds

    rows = sorted(over_seeds(runs), key=lambda r: ORDER.index(r["strategy"]) if r["strategy"] in ORDER else 99)
    for row in rows:
        row["buffer_size"] = max(r["buffer_size"] for r in runs if r["strategy"] == row["strategy"])
        row["curve"] = mean_curve([r["curve"] for r in runs if r["strategy"] == row["strategy"]])
        row["acc_curve"] = mean_curve([r["acc_curve"] for r in runs if r["strategy"] == row["strategy"]])
        row["round_wall_s"] = statistics.fmean(rnd["wall_seconds"] for r in runs if r["strategy"] == row["strategy"]
                                               for rnd in r["rounds"])
        # the whole stream's compute: every round's wall time, summed (mean over seeds)
        row["stream_wall_s"] = statistics.fmean(sum(rnd["wall_seconds"] for rnd in r["rounds"])
                                                for r in runs if r["strategy"] == row["strategy"])
    joint = next((r for r in rows if r["strategy"] == "joint"), None)
    for row in rows:
        row["ratio_to_joint"] = row["avg_acc"] / joint["avg_acc"] if joint and joint["avg_acc"] else None
    return rows


def mean_curve(curves: list[list[float]]) -> list[float]:
    return [statistics.fmean(values) for values in zip(*curves)]


def targets(result: dict) -> list[tuple[str, bool, str]]:
    """(target, met, measured) for the strategies that ran: the shipped default's (docs/benchmarks.md,
    "Learning per second"), then replay+ewc's from the stream's kind."""
    from continual.params import load_params

    by_name = {r["strategy"]: r for r in result["summary"]}
    joint, ridge, shipped = by_name.get("joint"), by_name.get("ridge"), load_params()["strategy"]["name"]
    found = []
    default = by_name.get(shipped)
    if default and ridge and shipped != "ridge":
        found.append((f"the default ({shipped}) >= frozen ridge (auto λ)", default["avg_acc"] >= ridge["avg_acc"],
                      f"{100 * (default['avg_acc'] - ridge['avg_acc']):+.1f} points "
                      f"({default['avg_acc']:.3f} vs {ridge['avg_acc']:.3f})"))
    if default and joint:
        found += [(f"the default ({shipped}) >= 97% of joint", default["ratio_to_joint"] >= 0.97,
                   f"{default['ratio_to_joint']:.1%} ({default['avg_acc']:.3f} vs {joint['avg_acc']:.3f})"),
                  (f"the default's ({shipped}) compute over the stream <= 1/4 of joint's",
                   default["stream_wall_s"] <= joint["stream_wall_s"] / 4,
                   f"{default['stream_wall_s'] / joint['stream_wall_s']:.3f} "
                   f"({default['stream_wall_s']:.0f} s vs {joint['stream_wall_s']:.0f} s)")]
    if default and TARGETS[result["stream"]] == "domain":
        found.append((f"the default's ({shipped}) average forgetting <= 1.5 points",
                      default["forgetting_avg"] <= 0.015, f"{100 * default['forgetting_avg']:.1f} points"))
    fine_tuned = by_name.get("replay+ewc")
    if fine_tuned and ridge:
        gap = fine_tuned["avg_acc"] - ridge["avg_acc"]
        found.append(("replay+ewc beats frozen ridge by >= 3 points", gap >= 0.03,
                      f"{100 * gap:+.1f} points ({fine_tuned['avg_acc']:.3f} vs {ridge['avg_acc']:.3f})"))
    if joint and ridge:
        found.append(("joint (the upper bound) beats frozen ridge", joint["avg_acc"] > ridge["avg_acc"],
                      f"{joint['avg_acc']:.3f} vs {ridge['avg_acc']:.3f}"))
    return found


def report(result: dict) -> str:
    kind = {"domain": "domain-incremental", "class": "class-incremental"}[TARGETS[result["stream"]]]
    sd = lambda row, key, scale=1.0: f"{scale * row[key]:.3f} ± {scale * row[key + '_sd']:.3f}"  # noqa: E731
    rows = [[r["strategy"], r["seeds"], sd(r, "avg_acc"), sd(r, "forgetting_avg"), sd(r, "forgetting_max"),
             sd(r, "bwt"), f"{r['ratio_to_joint']:.2f}" if r["ratio_to_joint"] is not None else "-",
             f"{r['train_seconds']:.0f}", f"{r['round_wall_s']:.1f}", f"{r['stream_wall_s']:.0f}", r["buffer_size"]]
            for r in result["summary"]]
    lines = [f"### {result['stream']} ({kind}): {len(result['runs'][0]['arrivals'])} arrivals, "
             f"{result['train_rows_seen']} train rows, test rows per arrival {list(result['test_rows'].values())}, "
             f"replay buffer {result['mem_size']}", "",
             harness.markdown_table(["strategy", "seeds", "final avg acc", "avg forgetting", "max forgetting", "BWT",
                                     "acc / joint", "train s", "s / round", "s / stream", "buffer"], rows), ""]
    lines += [f"- {name}: **{harness.verdict(met)}**, measured {measured}" for name, met, measured in targets(result)]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> Path:
    from continual.reports.plots import plot_two_panels

    def draw(left, right) -> None:
        for row in result["summary"]:
            runs = [r for r in result["runs"] if r["strategy"] == row["strategy"]]
            x = range(1, len(row["curve"]) + 1)
            for axis, key, mean in ((left, "curve", row["curve"]), (right, "acc_curve", row["acc_curve"])):
                line, = axis.plot(x, mean, STYLES.get(row["strategy"], "o-"), label=row["strategy"], alpha=0.85)
                low = [min(r[key][i] for r in runs) for i in range(len(mean))]
                high = [max(r[key][i] for r in runs) for i in range(len(mean))]
                axis.fill_between(x, low, high, color=line.get_color(), alpha=0.15)
                axis.set_xticks(list(x))

    return plot_two_panels(path, (f"{result['stream']}: average forgetting", "forgetting"),
                           (f"{result['stream']}: average accuracy", "accuracy"), draw,
                           note=f"mean over seeds {result['seeds']} (band: min-max), model {Path(result['model']).name}")


if __name__ == "__main__":
    main()
