"""Cost per round: replay+ewc against joint retraining over 8 arrivals of equal size.

    python benchmarks/cost.py --quick
    python benchmarks/cost.py                     # MiniLM, sizes from benchmarks/params.yaml

The stream is VADER's four domains, each split in two halves: 8 arrivals of `per_arrival` examples. The two
strategies run round by round in turn (replay+ewc round k, then joint round k), so both see the same load on
a shared machine. Per round: wall time of `run_round` (load, train, EWC Fisher pass, evaluation on every test
split so far, save) and the examples the training processed (replay's buffer examples included).
Targets: replay+ewc round 8 <= 1.3x its round 2; at round 8 replay+ewc >= 4x cheaper than joint.
Writes cost.json and cost.png under --out.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

STRATEGIES = ("replay+ewc", "joint")


def main() -> None:
    parser = harness.arguments(__doc__)
    parser.add_argument("--per-arrival", type=int, help="examples per arrival (each VADER domain gives 2)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mem-fraction", type=float, default=0.10)
    args = parser.parse_args()
    out = harness.prepare(args)
    bench = harness.settings(args, "cost")
    per_arrival = args.per_arrival or bench["per_arrival"]
    work = harness.ROOT / "bench" / "work" / f"cost-{bench['mode']}"
    params = harness.training_params(args, bench, work)
    print(f"machine: {harness.describe(harness.machine())}\ncommand: {harness.command_line()}\n", flush=True)

    from streams import build_stream, rounds, train_rows

    # Each domain is split into halves after drawing 2 x per_arrival examples from it.
    stream = build_stream("vader", work / "stream", 2 * per_arrival, halves=True)
    assert len(stream.stream()) == bench["rounds"], stream.stream()
    params["strategy"]["replay"]["mem_size"] = max(1, int(args.mem_fraction * train_rows(stream)))
    runs = {s: rounds(stream, params, s, args.seed, work / s.replace("+", "_")) for s in STRATEGIES}
    per_round: dict[str, list[dict]] = {s: [] for s in STRATEGIES}
    for index in range(1, bench["rounds"] + 1):
        for s in STRATEGIES:
            m = next(runs[s])
            per_round[s].append({k: m[k] for k in ("round", "wall_seconds", "train_seconds", "examples",
                                                   "train_rows", "avg_acc", "buffer_size")})
            print(f"-- round {index} {s}: {m['wall_seconds']:.1f} s, {m['examples']} examples", file=sys.stderr,
                  flush=True)
    for s in STRATEGIES:
        next(runs[s], None)  # let each generator clean its scratch folder

    result = {"mode": bench["mode"], "model": params["model"]["base"], "train": params["train"],
              "per_arrival": per_arrival, "mem_size": params["strategy"]["replay"]["mem_size"], "rounds": per_round,
              "targets": targets(per_round)}
    print(report(result), flush=True)
    harness.write_json(out, "cost", result)
    plot(per_round, out / "cost.png")


def targets(per_round: dict[str, list[dict]]) -> list[dict]:
    ours, joint = per_round["replay+ewc"], per_round["joint"]
    growth = ours[-1]["wall_seconds"] / ours[1]["wall_seconds"]
    cheaper = joint[-1]["wall_seconds"] / ours[-1]["wall_seconds"]
    cheaper_examples = joint[-1]["examples"] / ours[-1]["examples"]
    n = len(ours)
    return [
        {"target": f"replay+ewc round {n} wall time <= 1.3x round 2", "met": growth <= 1.3, "measured": growth},
        {"target": f"round {n}: replay+ewc >= 4x cheaper than joint (wall time)", "met": cheaper >= 4,
         "measured": cheaper},
        {"target": f"round {n}: joint / replay+ewc examples processed (for reference)", "met": None,
         "measured": cheaper_examples},
    ]


def report(result: dict) -> str:
    ours, joint = result["rounds"]["replay+ewc"], result["rounds"]["joint"]
    rows = [[a["round"], f"{a['wall_seconds']:.1f}", f"{a['train_seconds']:.1f}", a["examples"],
             f"{b['wall_seconds']:.1f}", f"{b['train_seconds']:.1f}", b["examples"],
             f"{b['wall_seconds'] / a['wall_seconds']:.2f}x"] for a, b in zip(ours, joint)]
    lines = [f"### cost per round: {len(ours)} VADER half-domain arrivals of {result['per_arrival']} examples, "
             f"replay buffer {result['mem_size']}", "",
             harness.markdown_table(["round", "replay+ewc wall s", "train s", "examples", "joint wall s", "train s",
                                     "examples", "joint / replay+ewc"], rows), ""]
    for t in result["targets"]:
        state = "" if t["met"] is None else f"**{harness.verdict(t['met'])}**, "
        lines.append(f"- {t['target']}: {state}measured {t['measured']:.2f}x")
    return "\n".join(lines) + "\n"


def plot(per_round: dict[str, list[dict]], path: Path) -> Path:
    from continual.reports.plots import plot_two_panels

    def draw(left, right) -> None:
        for s, rows in per_round.items():
            x = [r["round"] for r in rows]
            left.plot(x, [r["wall_seconds"] for r in rows], "o-", label=s)
            right.plot(x, [r["examples"] for r in rows], "o-", label=s)
            for axis in (left, right):
                axis.set_xticks(x)

    return plot_two_panels(path, ("wall time per round", "seconds"),
                           ("training examples processed per round", "examples"), draw)


if __name__ == "__main__":
    main()
