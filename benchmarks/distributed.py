"""Multi-process rounds: one MiniLM round with train.processes 1 and 2, side by side in one run.

    python benchmarks/distributed.py --quick
    CONTINUAL_THREADS=1 python benchmarks/distributed.py      # MiniLM, 400 VADER tweets, 1 thread a process
    python benchmarks/distributed.py --device cuda --domains tweets,movies,amazon,nyt --per-domain 3125 \
        --processes 1,4                                        # 10,000 train rows: a GPU run (gpu_run.sh)

The round's one arrival is `per_domain` examples of each VADER domain in `domains` (split as ingest splits
them, 80% train), trained with the shipped replay+ewc. Each repeat runs the round once per process count, in
an order that alternates between repeats, so both see the same load on a shared machine. Wall time is the
whole `run_round` call in this process: with 2 processes it includes starting torch.distributed.run and its
2 Python processes (imports, process group).
"in-round s" is rank 0's own wall time from its `run_round` start; "train s" is the epochs alone. The EWC
Fisher pass, evaluation and save count in both walls. ONNX export and the drift reference are off (rank 0
does them alone, as one process does). Writes distributed.json under --out.
"""
from __future__ import annotations

import copy
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402


def main() -> None:
    parser = harness.arguments(__doc__)
    parser.add_argument("--domains", help="VADER domains drawn for the one arrival, comma-separated")
    parser.add_argument("--per-domain", type=int, help="examples drawn from each domain (80%% of them train)")
    parser.add_argument("--processes", help="train.processes values compared, comma-separated (e.g. 1,2)")
    parser.add_argument("--repeats", type=int, help="rounds per process count, alternating")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    out = harness.prepare(args)
    bench = harness.settings(args, "distributed")
    domains = args.domains.split(",") if args.domains else bench["domains"]
    per_domain, repeats = args.per_domain or bench["per_domain"], args.repeats or bench["repeats"]
    counts = [int(n) for n in args.processes.split(",")] if args.processes else bench["processes"]
    work = harness.ROOT / "bench" / "work" / f"distributed-{bench['mode']}"
    params = harness.training_params(args, bench, work)
    params["export"]["reference_rows"] = 0
    print(f"machine: {harness.describe(harness.machine())}\ncommand: {harness.command_line()}\n", flush=True)

    from streams import SPLIT_SEED, rounds, write_stream

    import continual.rounds.round  # noqa: F401  (avalanche's ~7 s import, outside the first timed round)
    from continual.cli.demo import sample_domain
    from continual.params import load_params

    rows = [row for domain in domains for row in sample_domain(domain, per_domain, SPLIT_SEED)]
    stream = write_stream(work / "stream", [("-".join(domains), rows)], float(load_params()["ingest"]["test_fraction"]))
    runs = []
    for repeat in range(repeats):
        for processes in counts[:: 1 if repeat % 2 == 0 else -1]:
            p = copy.deepcopy(params)
            p["train"]["processes"] = processes
            started = time.perf_counter()
            (m,) = rounds(stream, p, p["strategy"]["name"], args.seed, work / f"p{processes}-{repeat}")
            wall = time.perf_counter() - started
            runs.append({"processes": processes, "repeat": repeat, "wall_seconds": wall,
                         "load_average": os.getloadavg(),
                         **{k: m[k] for k in ("train_seconds", "examples", "train_rows", "avg_acc", "threads")},
                         "in_round_seconds": m["wall_seconds"]})
            print(f"-- {processes} process(es), repeat {repeat + 1}: {wall:.1f} s, train {m['train_seconds']:.1f} s, "
                  f"avg_acc {m['avg_acc']:.3f}, load average {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)

    result = {"mode": bench["mode"], "model": params["model"]["base"], "train": params["train"],
              "strategy": params["strategy"]["name"], "domains": domains, "per_domain": per_domain, "runs": runs}
    print(report(result), flush=True)
    harness.write_json(out, "distributed", result)


def median(values: list[float]) -> float:
    values = sorted(values)
    return (values[(len(values) - 1) // 2] + values[len(values) // 2]) / 2


def report(result: dict) -> str:
    counts = sorted({r["processes"] for r in result["runs"]})
    rows, base = [], None
    for n in counts:
        mine = [r for r in result["runs"] if r["processes"] == n]
        wall, train = median([r["wall_seconds"] for r in mine]), median([r["train_seconds"] for r in mine])
        base = base or (wall, train)
        rows.append([n, f"{wall:.1f}", f"{median([r['in_round_seconds'] for r in mine]):.1f}", f"{train:.1f}",
                     f"{mine[0]['examples'] / train:.1f}", f"{base[0] / wall:.2f}x", f"{base[1] / train:.2f}x",
                     " / ".join(f"{r['avg_acc']:.3f}" for r in mine)])
    train_rows = result["runs"][0]["train_rows"]
    return "\n".join([
        f"### one {result['strategy']} round, {train_rows} train rows of VADER {'+'.join(result['domains'])} "
        f"({result['per_domain']} each), "
        f"{result['runs'][0]['threads']} thread(s) a process (medians of {len(result['runs']) // len(counts)})", "",
        harness.markdown_table(["processes", "wall s", "in-round s", "train s", "train ex/s", "speedup (wall)",
                                "speedup (train)", "accuracy"], rows), ""])


if __name__ == "__main__":
    main()
