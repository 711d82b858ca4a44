"""int8 against fp32, arrival by arrival, on both benchmark streams.

    python benchmarks/quantized.py               # MiniLM, the shipped strategy, sizes from benchmarks/params.yaml
    python benchmarks/quantized.py --quick       # tiny random model: a smoke test
    python benchmarks/quantized.py --stream vader --seeds 1,2

Each stream is trained with the shipped strategy (replay+ewc) by `continual.rounds.round.run_round`, the function `dvc
repro` runs, so every round exports its classifier to ONNX, quantizes it and measures the int8 graph on every
arrival's test split with the server's own ONNX backend (continual/rounds/export.py). The table gives, after the last
round, fp32 (torch) and int8 accuracy per arrival, and the largest drop seen after any round. Target: int8
within 1 point of fp32 on every arrival. Writes quantized_<stream>.json under --out.
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
from forgetting import run_benchmark, stream_arguments, stream_size  # noqa: E402

TARGET = 0.01


def main() -> None:
    parser = harness.arguments(__doc__)
    parser.add_argument("--stream", choices=("vader", "wordnet", "both"), default="both")
    parser.add_argument("--seeds", default="1", help="comma-separated training seeds (default 1)")
    parser.add_argument("--strategy", default="replay+ewc")
    stream_arguments(parser)
    args = parser.parse_args()
    out = harness.prepare(args)
    bench = harness.settings(args, "forgetting")
    seeds = [int(s) for s in args.seeds.split(",")]
    mem_fraction = args.mem_fraction if args.mem_fraction is not None else bench["mem_fraction"]
    print(f"machine: {harness.describe(harness.machine())}\ncommand: {harness.command_line()}\n", flush=True)
    for stream_name in ("vader", "wordnet") if args.stream == "both" else (args.stream,):
        work = harness.ROOT / "bench" / "work" / f"quantized-{bench['mode']}-{stream_name}-{args.seeds.replace(',', '_')}"
        params = harness.training_params(args, bench, work)
        params["export"]["onnx"] = True
        name = f"quantized_{stream_name}"
        result = run_benchmark(stream_name, stream_size(args, bench, stream_name), [args.strategy], seeds,
                               mem_fraction, params, work, lambda partial: harness.write_json(out, name, partial))
        result["model"] = params["model"]["base"]
        harness.write_json(out, name, result)
        print(report(result), flush=True)


def report(result: dict) -> str:
    runs = result["runs"]
    last = [run["rounds"][-1] for run in runs]
    arrivals = runs[0]["arrivals"]
    rows, worst = [], 0.0
    for key in arrivals:
        fp32 = statistics.fmean(r["acc"][key] for r in last)
        int8 = statistics.fmean(r["int8_acc"][key] for r in last)
        after_any = max(rnd["int8_drop"][key] for run in runs for rnd in run["rounds"] if key in rnd["int8_drop"])
        worst = max(worst, after_any)
        agreement = statistics.fmean(r["int8_agreement"][key] for r in last)
        rows.append([key, result["test_rows"][key], f"{fp32:.3f}", f"{int8:.3f}", f"{100 * (fp32 - int8):+.1f}",
                     f"{100 * after_any:+.1f}", f"{agreement:.1%}"])
    fp32_avg = statistics.fmean(r["avg_acc"] for r in last)
    int8_avg = statistics.fmean(statistics.fmean(r["int8_acc"].values()) for r in last)
    agree_all = statistics.fmean(a for run in runs for rnd in run["rounds"] for a in rnd["int8_agreement"].values())
    rows.append(["average", sum(result["test_rows"].values()), f"{fp32_avg:.3f}", f"{int8_avg:.3f}",
                 f"{100 * (fp32_avg - int8_avg):+.1f}", "", f"{agree_all:.1%} (all rounds)"])
    met = worst <= TARGET + 1e-9
    final_worst = max(max(r["int8_drop"].values()) for r in last)
    final_met = final_worst <= TARGET + 1e-9 and fp32_avg - int8_avg <= TARGET + 1e-9
    export_s = statistics.fmean(rnd.get("export_seconds", 0.0) for run in runs for rnd in run["rounds"])
    return "\n".join([
        f"### {result['stream']}: {runs[0]['strategy']}, seeds {result['seeds']}, model {Path(result['model']).name}", "",
        harness.markdown_table(["arrival", "test rows", "fp32 acc (torch)", "int8 acc (onnxruntime)",
                                "drop, points (last round)", "largest drop after any round",
                                "same label as fp32 (last round)"], rows), "",
        f"- one test row is {100 / min(result['test_rows'].values()):.1f} points of its arrival's accuracy: a "
        f"drop of one row already exceeds the 1-point target",
        f"- export, quantization and the int8 check add {export_s:.1f} s to a round (mean over rounds)",
        f"- the stream's final model (what is served): int8 within {100 * TARGET:.0f} point of fp32 on every "
        f"arrival and on average: **{harness.verdict(final_met)}**, largest drop {100 * final_worst:+.1f} points",
        f"- every round's model: int8 within {100 * TARGET:.0f} point on every arrival: "
        f"**{harness.verdict(met)}**, largest drop {100 * worst:+.1f} points", ""])


if __name__ == "__main__":
    main()
