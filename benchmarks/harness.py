"""What every benchmark script shares: its sizes, its threads and device, its model, and where it writes.

Kept free of dvc and mlflow imports, so the training benchmarks run on a machine that has only torch,
transformers, avalanche-lib, pyyaml, safetensors and matplotlib.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import warnings
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BENCH_PARAMS = Path(__file__).with_name("params.yaml")


def arguments(description: str) -> argparse.ArgumentParser:
    """The flags every script takes; each adds its own size flags (default: benchmarks/params.yaml)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny random model, tiny sizes: a smoke test")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("CONTINUAL_THREADS") or 1),
                        help="torch intra-op threads (default $CONTINUAL_THREADS, else 1)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="training device; auto = cuda when available (the trainer's own choice)")
    parser.add_argument("--base", help="model.base override: 'minilm' or a local Hugging Face folder")
    parser.add_argument("--out", type=Path, help="folder for the JSON and PNG (default bench/quick or bench/full)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override one training parameter, dotted as in params.yaml and parsed as YAML, "
                             "e.g. --set strategy.ewc.lambda=1e6 (repeatable; applied last)")
    return parser


def settings(args: argparse.Namespace, section: str) -> dict:
    """The quick: or full: sizes of one benchmark, plus the mode's model and train overrides."""
    mode = "quick" if args.quick else "full"
    all_settings = yaml.safe_load(BENCH_PARAMS.read_text())[mode]
    return {"mode": mode, "model": all_settings["model"], "train": all_settings["train"], **all_settings[section]}


def prepare(args: argparse.Namespace) -> Path:
    """Threads and device, set before torch is imported; returns the output folder."""
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the trainer picks cuda whenever torch sees one
    os.environ["CONTINUAL_THREADS"] = str(args.threads)  # what run_round reads (params train.threads is 0)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")  # a bar per epoch and round would drown the tables
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no load report each time a head grows
    # Avalanche warns on every experience (no loggers, deprecated storage update): not ours to fix here.
    warnings.filterwarnings("ignore", module=r"avalanche\.")
    warnings.filterwarnings("ignore", message=r"(?s).*(No loggers specified|deprecated)")
    import torch

    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA device")
    out = args.out or ROOT / "bench" / ("quick" if args.quick else "full")
    out.mkdir(parents=True, exist_ok=True)
    return out


def training_params(args: argparse.Namespace, bench: dict, work: Path) -> dict:
    """The shipped default params, with the benchmark's model and train overrides."""
    from continual.model.encoder import make_tiny_model
    from continual.params import load_params

    params = load_params()
    base = args.base or bench["model"]
    if base == "tiny":
        folder = work / "tiny-model"
        if not (folder / "config.json").exists():
            make_tiny_model(folder, ["neg", "neu", "pos"])  # round 1 gives it the stream's own head
        base = str(folder)
    params["model"]["base"] = base
    # The learning benchmarks time training; a round's ONNX export and int8 check (about 10 s for MiniLM) would
    # blur "s / round". benchmarks/quantized.py turns it back on and reports its cost.
    params["export"]["onnx"] = False
    params["train"].update(bench["train"])
    params["train"]["threads"] = args.threads
    for key, value in overrides(args).items():
        *path, leaf = key.split(".")
        section = params
        for part in path:
            section = section[part]
        if leaf not in section:
            sys.exit(f"--set {key}: params.yaml has no such key")
        section[leaf] = value
    return params


def overrides(args: argparse.Namespace) -> dict:
    """--set KEY=VALUE pairs, values parsed as YAML (1e6 and 5.0e-5 both become floats)."""
    pairs = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            sys.exit(f"--set {item}: expected KEY=VALUE")
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str):  # YAML reads 1e6 (no dot) as a string
            try:
                parsed = float(parsed)
            except ValueError:
                pass
        pairs[key] = parsed
    return pairs


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "device": "cpu"}
    if torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name(0)
    return info


def describe(info: dict) -> str:
    return (f"{info['cores']} cores ({info['cpu']}), torch {info['torch']} with {info['torch_threads']} thread(s), "
            f"training on {info['device']}")


def command_line() -> str:
    return " ".join(["python", os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


def write_json(out: Path, name: str, data: dict) -> Path:
    path = out / f"{name}.json"
    path.write_text(json.dumps({"command": command_line(), "machine": machine(), **data}, indent=2) + "\n")
    return path


def markdown_table(headers: list[str], rows: list[list]) -> str:
    aligns = ["---" if i == 0 else "---:" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(aligns) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def stop_process(proc) -> None:
    """Terminate a server the benchmark started; kill it if it has not exited after 30 s."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def verdict(met: bool) -> str:
    return "met" if met else "MISSED"
