"""A round's cost, phase by phase, as `dvc repro` runs it (ONNX export, int8 check and drift reference on).

    python benchmarks/round_phases.py --quick
    python benchmarks/round_phases.py                 # MiniLM: VADER's first two arrivals (tweets, movies)

Each strategy trains the first `--rounds` arrivals of the VADER stream (the forgetting benchmark's sizes) in
a scratch copy, with `continual.rounds.round.run_round`. Per round: the seconds of each phase (`continual/rounds/costs.py`),
the wall time, and the share of the wall time outside training. Targets: outside training <= 30% of a
fine-tuning round's wall time; a frozen-encoder round never exports or quantizes the encoder again.
Beside it, the two ONNX exporters of torch on the same model, alternated: TorchScript (shipped) and dynamo.
Writes round_phases.json under --out.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

STRATEGIES = ("adapt", "replay+ewc", "ridge")


def main() -> None:
    parser = harness.arguments(__doc__)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="exporter timings per exporter")
    args = parser.parse_args()
    out = harness.prepare(args)
    bench = harness.settings(args, "forgetting")
    work = harness.ROOT / "bench" / "work" / f"round-phases-{bench['mode']}"
    params = harness.training_params(args, bench, work)
    params["export"]["onnx"] = True  # what dvc repro runs; the learning benchmarks turn it off
    print(f"machine: {harness.describe(harness.machine())}\ncommand: {harness.command_line()}\n", flush=True)

    from streams import build_stream, rounds

    from continual.rounds.costs import TRAINING, format_costs

    stream = build_stream("vader", work / "stream", bench["vader_per_domain"])
    result: dict = {"mode": bench["mode"], "rounds": []}
    for strategy in args.strategies.split(","):
        for i, metrics in enumerate(rounds(stream, params, strategy, 1, work / strategy.replace("+", "_"))):
            phases = metrics["phase_seconds"]
            outside = metrics["wall_seconds"] - sum(phases.get(p, 0.0) for p in TRAINING)
            result["rounds"].append({k: metrics.get(k) for k in ("key", "strategy", "phase_seconds", "wall_seconds",
                                                                  "export_head_only", "examples", "trainable_params")}
                                    | {"outside_training_share": outside / metrics["wall_seconds"]})
            if i + 1 >= args.rounds:
                break
    result["exporters"] = compare_exporters(params, args.repeats)
    print(format_costs(result["rounds"]), "", sep="\n")
    for r in result["rounds"]:
        if r["trainable_params"]:
            share = r["outside_training_share"]
            print(f"- {r['strategy']} {r['key']}: outside training {share:.0%} of {r['wall_seconds']:.1f} s: "
                  f"**{harness.verdict(share <= 0.30)}** (target <= 30%)")
        else:
            print(f"- {r['strategy']} {r['key']}: frozen encoder, graphs "
                  f"{'reused with a new head' if r['export_head_only'] else 'exported and quantized'}")
    e = result["exporters"]
    print(f"- ONNX export of the same model: TorchScript {e['torchscript']:.2f} s, dynamo {e['dynamo']:.2f} s "
          f"(median of {args.repeats} each, alternated)")
    harness.write_json(out, "round_phases", result)


def compare_exporters(params: dict, repeats: int) -> dict:
    import io
    import logging
    import tempfile
    import warnings
    from contextlib import redirect_stdout

    import torch

    from continual.rounds.export import _LogitsAndEmbedding, export_fp32
    from continual.model.encoder import new_classifier
    from continual.model.pretrained import base_model_path

    model, tokenizer = new_classifier(base_model_path(params["model"]["base"]), ["neg", "neu", "pos"],
                                      int(params["model"]["max_length"]))

    def dynamo(path: Path) -> None:
        example = tokenizer(["an example text", "a second, longer example text"], padding=True, return_tensors="pt")
        batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=model.max_length)
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)
            torch.onnx.export(_LogitsAndEmbedding(model), (example["input_ids"], example["attention_mask"]),
                              dynamo=True, input_names=["input_ids", "attention_mask"],
                              output_names=["logits", "sentence_embedding"],
                              dynamic_shapes=({0: batch, 1: sequence}, {0: batch, 1: sequence}),
                              opset_version=18).save(str(path))

    times: dict[str, list[float]] = {"torchscript": [], "dynamo": []}
    with tempfile.TemporaryDirectory() as scratch:
        for i in range(repeats):
            for name in ("torchscript", "dynamo") if i % 2 == 0 else ("dynamo", "torchscript"):
                begin = time.perf_counter()
                (dynamo if name == "dynamo" else lambda p: export_fp32(model, tokenizer, p))(Path(scratch) / "m.onnx")
                times[name].append(time.perf_counter() - begin)
    return {name: statistics.median(values) for name, values in times.items()} | {"samples": times}


if __name__ == "__main__":
    main()
