"""LoRA rounds against full fine-tuning: round folder size, peak training memory, accuracy and forgetting.

    python benchmarks/lora.py --quick                       # tiny random model: a smoke test
    python benchmarks/lora.py                               # MiniLM, sizes from benchmarks/params.yaml (lora:)
    python benchmarks/lora.py --seeds 1 --jobs 1            # one seed, one process at a time

Both benchmark streams (VADER, domain-incremental; WordNet, class-incremental), same splits and seeds:
- full: replay+ewc with model.adapter: none (what ships);
- lora: replay+ewc with model.adapter: lora (EWC over the adapters and head);
- lora-naive: sequential LoRA, one adapter continued every round, no replay, no EWC;
- lora-qv: the same, adapters on the attention's query and value only (LoRA's own choice): fewer
  adapted layers keep fewer activations;
- olora: a new adapter per round, orthogonal to the earlier ones (continual/strategies/olora.py);
- ridge (the frozen encoder with a closed-form head) and joint (retraining on every arrival so far): the
  baselines every learning result stands beside.

`--configs full,lora` runs some; the tables then read every run on record under --out (lora_runs/), and
`--configs=` runs none: it only redraws the tables and plots (lora_<stream>.png) from the record.

Every (stream, config, seed) trains in its own process, `--jobs` at a time (one torch thread each), so its
peak RSS (the kernel's ru_maxrss for that child) is its own. Round folder bytes are measured as each round
is written, with the ONNX export off for both kinds (a full round's ONNX would add ~115 MB to it, a LoRA
round's none: the ratio given is the conservative one). Targets (issue "Parameter-efficient rounds"):
lora's folder <= 1/20 of full's, peak RSS <= 0.7x, final average accuracy within 2 points with no more
average forgetting; olora forgets less than lora-naive on WordNet.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

CONFIGS = {"full": ("replay+ewc", "none", {}), "lora": ("replay+ewc", "lora", {}),
           "lora-qv": ("replay+ewc", "lora", {"target_modules": ["query", "value"]}),
           "lora-naive": ("naive", "lora", {}), "olora": ("olora", "lora", {}),
           "ridge": ("ridge", "none", {}), "joint": ("joint", "none", {})}  # the baselines, same splits
PLAN = {"vader": ["full", "lora", "lora-qv", "ridge", "joint"],
        "wordnet": ["full", "lora", "lora-qv", "lora-naive", "olora", "ridge", "joint"]}


def main() -> None:
    parser = harness.arguments(__doc__)
    parser.add_argument("--seeds", help="comma-separated training seeds")
    parser.add_argument("--jobs", type=int, default=2, help="runs side by side (default 2: the two cores)")
    parser.add_argument("--stream", choices=("vader", "wordnet", "both"), default="both")
    parser.add_argument("--configs", help=f"comma-separated, of {', '.join(CONFIGS)} (default: all that PLAN runs)")
    parser.add_argument("--one", help=argparse_hidden())
    args = parser.parse_args()
    out = harness.prepare(args)
    if args.one:
        return run_one(json.loads(args.one), args)
    bench = harness.settings(args, "lora")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else bench["seeds"]
    work = harness.ROOT / "bench" / "work" / f"lora-{bench['mode']}"
    print(f"machine: {harness.describe(harness.machine())}\ncommand: {harness.command_line()}\n", flush=True)
    streams = ("vader", "wordnet") if args.stream == "both" else (args.stream,)
    from streams import build_stream

    harness.training_params(args, bench, work)  # the tiny model, under --quick: made once, before the children
    for stream in streams:  # the splits every config and seed shares
        build_stream(stream, work / f"stream-{stream}", bench[f"{stream}_size"])
    chosen = args.configs.split(",") if args.configs is not None else list(CONFIGS)
    jobs = [{"stream": s, "config": c, "seed": seed, "size": bench[f"{s}_size"], "work": str(work)}
            for seed in seeds for s in streams for c in PLAN[s] if c in chosen]
    run_all(jobs, args, out)
    for stream in streams:  # every run of this size on record, from this command and earlier ones (--configs)
        runs = [json.loads(f.read_text()) for f in sorted((out / "lora_runs").glob(f"{stream}-*.json"))]
        runs = [r for r in runs if r["size"] == bench[f"{stream}_size"] and "peak_rss_mb" in r]
        result = {"stream": stream, "size": bench[f"{stream}_size"], "runs": runs, "summary": summarise(runs)}
        harness.write_json(out, f"lora_{stream}", {"mode": bench["mode"], **result})
        print(report(result), flush=True)
        plot(result, out / f"lora_{stream}.png")


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


def run_all(jobs: list[dict], args, out: Path) -> list[dict]:
    """Each job in a child process, ``--jobs`` at a time; its peak RSS from os.wait4."""
    pending, running, results = list(jobs), {}, []
    while pending or running:
        while pending and len(running) < args.jobs:
            job = pending.pop(0)
            target = out / "lora_runs" / f"{job['stream']}-{job['config']}-{job['seed']}.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            command = [sys.executable, __file__, "--one", json.dumps({**job, "result": str(target)}),
                       "--threads", str(args.threads), "--device", args.device, *(["--quick"] if args.quick else []),
                       *(["--base", args.base] if args.base else []),
                       *[flag for pair in args.overrides for flag in ("--set", pair)]]
            proc = subprocess.Popen(command)
            running[proc.pid] = (proc, job, target, time.perf_counter())
            print(f"-- started {job['stream']} {job['config']} seed {job['seed']}", file=sys.stderr, flush=True)
        pid, status, usage = os.wait4(-1, 0)
        if pid not in running:
            continue
        proc, job, target, begin = running.pop(pid)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0 or not target.exists():
            sys.exit(f"{job} failed with exit code {proc.returncode}")
        result = json.loads(target.read_text())
        result.update(peak_rss_mb=usage.ru_maxrss / 1024, process_seconds=time.perf_counter() - begin)
        target.write_text(json.dumps(result, indent=2) + "\n")
        results.append(result)
        print(f"-- done {job['stream']} {job['config']} seed {job['seed']}: acc {result['avg_acc']:.3f}, "
              f"forgetting {result['forgetting_avg']:.3f}, RSS {result['peak_rss_mb']:.0f} MB, "
              f"folder {result['folder_mb']:.2f} MB", file=sys.stderr, flush=True)
    return results


def run_one(job: dict, args) -> None:
    """One stream under one config and seed, in this process; writes its figures to job['result']."""
    import copy

    from continual.workspace.storage import folder_bytes
    from continual.workspace.layout import Workspace
    from streams import rounds, train_rows

    bench = harness.settings(args, "lora")
    work = Path(job["work"])
    stream = Workspace.at(work / f"stream-{job['stream']}")  # built by the parent: the same splits for all
    params = copy.deepcopy(harness.training_params(args, bench, work))
    strategy, adapter, lora = CONFIGS[job["config"]]
    params["model"]["adapter"] = adapter
    params["model"]["lora"].update(lora)
    params["strategy"]["replay"]["mem_size"] = max(1, int(bench["mem_fraction"] * train_rows(stream)))
    folder = work / "runs" / f"{job['stream']}-{job['config']}-{job['seed']}"
    metrics, sizes = [], []
    for round_metrics in rounds(stream, params, strategy, job["seed"], folder):  # a folder lives until the next
        metrics.append(round_metrics)
        sizes.append(folder_bytes(Workspace.at(folder).round_dir(round_metrics["key"])))
    last = metrics[-1]
    result = {**{k: job[k] for k in ("stream", "config", "seed", "size")}, "strategy": strategy, "adapter": adapter,
              "avg_acc": last["avg_acc"], "forgetting_avg": last["forgetting_avg"],
              "forgetting_max": last["forgetting_max"],
              "accuracy_matrix": last["accuracy_matrix"],
              "folder_mb": statistics.fmean(total for total, _ in sizes) / 1e6,
              "weights_mb": statistics.fmean(weights for _, weights in sizes) / 1e6,
              "round_seconds": statistics.fmean(m["wall_seconds"] for m in metrics),
              "examples_per_s": statistics.fmean(m["examples_per_s"] for m in metrics),
              "lora": params["model"]["lora"] if adapter == "lora" else None, "train": params["train"]}
    Path(job["result"]).write_text(json.dumps(result, indent=2) + "\n")


def summarise(runs: list[dict]) -> list[dict]:
    rows = []
    for config in CONFIGS:
        mine = [r for r in runs if r["config"] == config]
        if not mine:
            continue
        row = {"config": config, "seeds": sorted(r["seed"] for r in mine)}
        for key in ("avg_acc", "forgetting_avg", "forgetting_max", "folder_mb", "weights_mb", "peak_rss_mb",
                    "round_seconds", "examples_per_s"):
            values = [r[key] for r in mine]
            row[key], row[key + "_sd"] = statistics.fmean(values), statistics.pstdev(values)
        rows.append(row)
    return rows


def targets(result: dict) -> list[tuple[str, bool, str]]:
    by = {r["config"]: r for r in result["summary"]}
    found = []
    full = by.get("full")
    for name in ("lora", "lora-qv"):
        lora = by.get(name)
        if not (full and lora):
            continue
        ratio = lora["folder_mb"] / full["folder_mb"]
        found.append((f"{name}: round folder <= 1/20 of full fine-tuning's", ratio <= 1 / 20,
                      f"1/{1 / ratio:.0f} ({lora['folder_mb']:.2f} MB vs {full['folder_mb']:.1f} MB)"))
        rss = lora["peak_rss_mb"] / full["peak_rss_mb"]
        found.append((f"{name}: peak training RSS <= 0.7x", rss <= 0.7,
                      f"{rss:.2f}x ({lora['peak_rss_mb']:.0f} MB vs {full['peak_rss_mb']:.0f} MB)"))
        gap = lora["avg_acc"] - full["avg_acc"]
        found.append((f"{name}: final avg accuracy within 2 points", gap >= -0.02,
                      f"{100 * gap:+.1f} points ({lora['avg_acc']:.3f} vs {full['avg_acc']:.3f})"))
        more = lora["forgetting_avg"] - full["forgetting_avg"]
        found.append((f"{name}: no more average forgetting", more <= 0,
                      f"{100 * more:+.1f} points ({lora['forgetting_avg']:.3f} vs {full['forgetting_avg']:.3f})"))
        speed = lora["examples_per_s"] / full["examples_per_s"]
        found.append((f"{name}: examples/s over full's (no target)", None, f"{speed:.2f}x"))
    if by.get("olora") and by.get("lora-naive") and result["stream"] == "wordnet":
        o, n = by["olora"], by["lora-naive"]
        found.append(("olora forgets less than sequential LoRA (lora-naive)", o["forgetting_avg"] < n["forgetting_avg"],
                      f"{o['forgetting_avg']:.3f} vs {n['forgetting_avg']:.3f} average forgetting; accuracy "
                      f"{o['avg_acc']:.3f} vs {n['avg_acc']:.3f}"))
    return found


def report(result: dict) -> str:
    sd = lambda row, key, fmt="{:.3f}": f"{fmt.format(row[key])} ± {fmt.format(row[key + '_sd'])}"  # noqa: E731
    rows = [[r["config"], len(r["seeds"]), sd(r, "avg_acc"), sd(r, "forgetting_avg"), f"{r['forgetting_max']:.3f}",
             f"{r['folder_mb']:.2f}", f"{r['weights_mb']:.2f}", f"{r['peak_rss_mb']:.0f}", f"{r['round_seconds']:.1f}",
             f"{r['examples_per_s']:.1f}"] for r in result["summary"]]
    unit = "domain" if result["stream"] == "vader" else "class"
    lines = [f"### {result['stream']} ({result['size']} per {unit})", "",
             harness.markdown_table(["config", "seeds", "final avg acc", "avg forgetting", "max forgetting",
                                     "round folder MB", "of it weights MB", "peak RSS MB", "s / round", "ex / s"],
                                    rows), ""]
    lines += [f"- {name}: " + (f"**{harness.verdict(met)}**, " if met is not None else "") + f"measured {measured}"
              for name, met, measured in targets(result)]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> Path:
    """One bar per config in four panels: accuracy, forgetting, peak RSS, round folder (log scale)."""
    from matplotlib.figure import Figure

    rows = result["summary"]
    names = [r["config"] for r in rows]
    fig = Figure(figsize=(13, 3.4))
    panels = (("final avg accuracy", "avg_acc"), ("avg forgetting", "forgetting_avg"),
              ("peak training RSS (MB)", "peak_rss_mb"), ("round folder (MB, log)", "folder_mb"))
    for ax, (title, key) in zip(fig.subplots(1, 4), panels):
        ax.bar(names, [r[key] for r in rows], yerr=[r[key + "_sd"] for r in rows], capsize=3,
               color=["#777777" if n == "full" else "#3b75af" for n in names])
        ax.set_title(title, fontsize="medium")
        ax.tick_params(axis="x", rotation=35, labelsize="small")
        if key == "folder_mb":
            ax.set_yscale("log")
    fig.suptitle(f"{result['stream']}: LoRA against full fine-tuning, mean ± SD over seeds", fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


if __name__ == "__main__":
    main()
