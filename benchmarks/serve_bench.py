"""Load test on loopback: our server on each backend against `mlflow models serve`, same registered MiniLM
champion, one run.

    make bench-serve        # = python benchmarks/serve_bench.py --seconds 15

The champion is MiniLM with a ridge head fitted on 300 VADER tweets, exported and quantized as a round does it
(continual/rounds/export.py) and tagged with the gate's int8 check, in a fresh SQLite registry. Servers run one at a
time, each with its defaults (ours: gunicorn, workers and threads from the core count; mlflow: its own). For each
concurrency level (1, 8, 32 clients, one text per request, back to back) the table gives throughput, p50/p99
latency and the load generator's own CPU use (this process: its threads send the requests). Before any server
starts, the bare fp32 PyTorch forward of one text (tokenizer + model, torch's default threads) is measured in this
process: the latency target is relative to it. Cold start: `service.serve` on the champion's local folder, launch
to ready, three times.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

ROOT = harness.ROOT
BIN = Path(sys.executable).parent
NAME = "bench-minilm"
OURS = {"ours (auto: int8)": [], "ours (onnx fp32)": ["--backend", "onnx"], "ours (torch)": ["--backend", "torch"]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tweets() -> list[dict]:
    with open(ROOT / "data" / "vader" / "tweets.csv", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def build_champion(tmp: Path) -> tuple[str, Path, dict]:
    """(tracking URI, model folder, quantization report): MiniLM + ridge head, exported, registered, champion."""
    import mlflow
    from mlflow import MlflowClient

    from continual.model.evaluation import accuracy
    from continual.rounds.export import export_round_model
    from continual.model.encoder import new_classifier
    from continual.model.pretrained import base_model_path
    from continual.params import load_params
    from continual.rounds.reference import write_reference
    from continual.strategies.ridge import fit_ridge_head
    from continual.registry.register import log_pooled_model
    from service.backends import int8_verdict
    from service.registry_tags import INT8_GATE_TAG

    rows = tweets()
    train, held_out = rows[:300], rows[300:700]
    labels = sorted({r["label"] for r in train})
    model, tokenizer = new_classifier(base_model_path("minilm"), labels, 128)
    fit_ridge_head(model, tokenizer, train, load_params())  # the frozen-encoder strategy's head, as shipped
    folder = tmp / "minilm"
    model.save(folder)
    tokenizer.save_pretrained(folder)
    fp32 = {"tweets-held-out": accuracy(model, tokenizer, held_out, 64)[0]}
    report = export_round_model(model, tokenizer, folder, {"tweets-held-out": held_out}, fp32, {"int8_per_channel": True}, 64)
    # The drift monitor's reference, as a round stores it: its checks then run in full (embedding AUC included).
    write_reference(model, tokenizer, folder, train, {"tweets-held-out": held_out}, [[fp32["tweets-held-out"]]],
                    batch_size=64)

    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment = client.create_experiment("bench", artifact_location=(tmp / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = log_pooled_model(folder, registered_model_name=NAME)
    version = str(info.registered_model_version)
    client.set_model_version_tag(NAME, version, INT8_GATE_TAG, int8_verdict(report, 0.01)[1])
    client.set_registered_model_alias(NAME, "champion", version)
    return uri, folder, report


def bare_forward_ms(folder: Path, texts: list[str], n: int = 300) -> tuple[float, float]:
    """Median (ms) of tokenizer + forward of one text: fp32 PyTorch (torch's default threads), int8 onnxruntime
    (one thread, as each of our workers runs it)."""
    import torch

    from continual.model.encoder import load_classifier
    from service.backends import BackendChoice
    from service.backends.onnxrt import OnnxClassifier
    from service.model_source import ModelCard

    model, tokenizer = load_classifier(folder)
    int8 = OnnxClassifier.load(folder, ModelCard("bench", "bench"), 128, BackendChoice("onnx-int8", "bench"), 1)
    times: dict[str, list[float]] = {"torch": [], "int8": []}
    with torch.inference_mode():
        for i in range(n):
            text = texts[i % len(texts)]
            start = time.perf_counter()
            batch = tokenizer([text], return_tensors="pt", truncation=True, max_length=128)
            model(batch["input_ids"], batch["attention_mask"])
            middle = time.perf_counter()
            int8.predict([text], 1)
            times["torch"].append(middle - start)
            times["int8"].append(time.perf_counter() - middle)
    return tuple(statistics.median(times[k][30:]) * 1000 for k in ("torch", "int8"))


def wait_ready(url: str, proc: subprocess.Popen, start: float, timeout: float = 240) -> float:
    """Seconds from ``start`` (the process's launch) until ``url`` answers 200."""
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return time.perf_counter() - start
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise TimeoutError(url)


def load(url: str, body_of, texts: list[str], clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = [0]
    stop = time.perf_counter() + seconds
    lock = threading.Lock()

    def client(offset: int) -> None:
        session, i = requests.Session(), offset
        while time.perf_counter() < stop:
            start = time.perf_counter()
            response = session.post(url, json=body_of(texts[i % len(texts)]), timeout=60)
            elapsed = time.perf_counter() - start
            with lock:
                if response.status_code == 200:
                    latencies.append(elapsed)
                else:
                    errors[0] += 1
            i += clients

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    began, cpu_began = time.perf_counter(), time.process_time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - began, time.process_time() - cpu_began
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    return {"rps": len(latencies) / wall, "p50": pick(0.50), "p99": pick(0.99), "n": len(latencies),
            "errors": errors[0], "generator_cores": cpu / wall}


def start(command: list[str], env: dict, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def measure(name: str, command: list[str], ready: str, predict: str, body_of, env: dict, cwd: Path, texts: list[str],
            levels: list[int], seconds: float) -> dict:
    launched = time.perf_counter()
    proc = start(command, env, cwd)
    try:
        cold = wait_ready(ready, proc, launched)
        print(f"{name}: ready in {cold:.1f} s", file=sys.stderr, flush=True)
        rows = {clients: load(predict, body_of, texts, clients, seconds) for clients in levels}
        info = requests.get(ready.replace("/v2/health/ready", f"/v2/models/{NAME}"), timeout=5).json() \
            if "/v2/" in ready else {}
    finally:
        harness.stop_process(proc)
    return {"cold_s": cold, "levels": rows, "backend": info.get("backend")}


def serve_command(port: int, *extra: str) -> list[str]:
    return [str(BIN / "python"), "-m", "service.serve", "--port", str(port), *extra]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "serve")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="service config for our servers, e.g. --set max_wait_ms=2")
    parser.add_argument("--monitoring-pairs", type=int, default=2,
                        help="monitoring off / on runs of the auto server, alternated this many times (0: none)")
    parser.add_argument("--monitoring-only", action="store_true", help="run only the monitoring off / on pairs")
    args = parser.parse_args()
    levels = [int(c) for c in args.levels.split(",")]
    texts = [row["text"] for row in tweets()][:500]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    result: dict = {"cores": len(os.sched_getaffinity(0)), "seconds": args.seconds, "servers": {}}
    with tempfile.TemporaryDirectory() as tmp:
        uri, folder, report = build_champion(Path(tmp))
        env["MLFLOW_TRACKING_URI"] = uri
        result["bare_ms"], result["bare_int8_ms"] = bare_forward_ms(folder, texts)
        result["bytes"] = report["bytes"]
        result["held_out_accuracy"] = {"fp32": report["fp32"], "int8": report["int8"]}
        predict_body = lambda t: {"texts": [t]}  # noqa: E731
        sets = [f"--set={kv}" for kv in args.set]
        if args.monitoring_pairs:
            result["monitoring"] = monitoring_pairs(args, env, texts, levels, sets, predict_body)
        if args.monitoring_only:
            return finish(args, result, levels)
        for name, extra in OURS.items():
            port = free_port()
            result["servers"][name] = measure(
                name, serve_command(port, "--registered-model", NAME, *extra, *sets),
                f"http://127.0.0.1:{port}/v2/health/ready", f"http://127.0.0.1:{port}/predict", predict_body, env,
                ROOT, texts, levels, args.seconds)
        port = free_port()
        result["servers"]["mlflow models serve"] = measure(
            "mlflow models serve", [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{NAME}@champion",
                                    "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
            f"http://127.0.0.1:{port}/ping", f"http://127.0.0.1:{port}/invocations", lambda t: {"inputs": [t]}, env,
            Path(tmp), texts, levels, args.seconds)
        colds = []
        for _ in range(3):  # from the local folder: no registry, no download
            port = free_port()
            launched = time.perf_counter()
            proc = start(serve_command(port, "--model-uri", str(folder)), env, ROOT)
            try:
                colds.append(wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", proc, launched))
            finally:
                harness.stop_process(proc)
        result["cold_local_s"] = colds
    finish(args, result, levels)


# Monitoring on as shipped (a check every 30 s) against monitoring off: the same auto (int8) server, alternated, each
# run in a fresh process. --set monitoring_interval_s=5 makes the drift thread's share six times larger.
MONITORING = {"off": ["--set", "monitoring=false"], "on": []}


def monitoring_pairs(args, env: dict, texts: list[str], levels: list[int], sets: list[str], body_of) -> dict:
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for _ in range(args.monitoring_pairs):
        for mode, extra in MONITORING.items():
            port = free_port()
            runs[mode].append(measure(f"ours (auto), monitoring {mode}",
                                      serve_command(port, "--registered-model", NAME, *extra, *sets),
                                      f"http://127.0.0.1:{port}/v2/health/ready", f"http://127.0.0.1:{port}/predict",
                                      body_of, env, ROOT, texts, levels, args.seconds))
    return {mode: {clients: {key: statistics.median(run["levels"][clients][key] for run in mode_runs)
                             for key in ("rps", "p50", "p99")} for clients in levels}
            for mode, mode_runs in runs.items()} | {"runs": runs}


def finish(args, result: dict, levels: list[int]) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve_bench.json").write_text(json.dumps({"command": harness.command_line(), **result}, indent=2))
    if result["servers"]:
        print(report_text(result, levels))
    if "monitoring" in result:
        print(monitoring_text(result["monitoring"], levels))


def monitoring_text(monitoring: dict, levels: list[int]) -> str:
    off, on = monitoring["off"], monitoring["on"]
    rows = [[clients, f"{off[clients]['rps']:.1f}", f"{on[clients]['rps']:.1f}",
             f"{on[clients]['rps'] / off[clients]['rps']:.3f}", f"{off[clients]['p99']:.1f}", f"{on[clients]['p99']:.1f}",
             f"{on[clients]['p99'] / off[clients]['p99']:.3f}"] for clients in levels]
    top, one = max(levels), min(levels)
    throughput = on[top]["rps"] / off[top]["rps"]
    latency = on[one]["p99"] / off[one]["p99"]
    pairs = len(monitoring["runs"]["on"])
    return "\n".join([
        f"Monitoring off / on, auto (int8) server, medians of {pairs} alternated runs each:", "",
        harness.markdown_table(["clients", "req/s off", "req/s on", "on/off", "p99 ms off", "p99 ms on", "on/off"], rows),
        "", f"- throughput at {top} clients within 5% of monitoring off: **{harness.verdict(throughput >= 0.95)}**, "
            f"{throughput:.3f}x",
        f"- p99 at {one} client within 5% of monitoring off: **{harness.verdict(latency <= 1.05)}**, {latency:.3f}x"])


def report_text(result: dict, levels: list[int]) -> str:
    servers = result["servers"]
    mlflow = servers["mlflow models serve"]
    ours = servers["ours (auto: int8)"]
    lines = [f"{result['cores']} cores. Bare forward of one text, median: fp32 PyTorch {result['bare_ms']:.1f} ms, "
             f"int8 onnxruntime (1 thread) {result['bare_int8_ms']:.1f} ms. Auto chose: {ours['backend']}.", ""]
    rows = []
    for name, server in servers.items():
        for clients in levels:
            row = server["levels"][clients]
            rows.append([name, clients, f"{row['rps']:.1f}", f"{row['rps'] / mlflow['levels'][clients]['rps']:.2f}x",
                         f"{row['p50']:.1f}", f"{row['p99']:.1f}", f"{row['generator_cores']:.2f}", row["errors"],
                         f"{server['cold_s']:.1f}" if clients == levels[0] else ""])
    lines.append(harness.markdown_table(["server", "clients", "req/s", "vs mlflow", "p50 ms", "p99 ms",
                                         "load generator, cores", "errors", "ready after launch, s"], rows))
    top, one = max(levels), min(levels)
    throughput = ours["levels"][top]["rps"] / mlflow["levels"][top]["rps"]
    latency = ours["levels"][one]["p99"] / result["bare_ms"]
    size = result["bytes"]["fp32"] / result["bytes"]["int8"]
    cold = statistics.median(result["cold_local_s"])
    acc = result["held_out_accuracy"]
    lines += ["",
              f"- throughput at {top} clients, ours (auto) / mlflow models serve >= 3x: "
              f"**{harness.verdict(throughput >= 3)}**, {throughput:.2f}x",
              f"- p99 at {one} client / bare fp32 forward <= 1.5x: **{harness.verdict(latency <= 1.5)}**, "
              f"{latency:.2f}x ({ours['levels'][one]['p99']:.1f} ms / {result['bare_ms']:.1f} ms)",
              f"- int8 file >= 3x smaller than fp32: **{harness.verdict(size >= 3)}**, {size:.2f}x "
              f"({result['bytes']['int8'] / 1e6:.1f} MB / {result['bytes']['fp32'] / 1e6:.1f} MB)",
              f"- cold start from a local folder < 3 s: **{harness.verdict(cold < 3)}**, median {cold:.2f} s "
              f"({', '.join(f'{c:.2f}' for c in result['cold_local_s'])})",
              f"- held-out tweets (400): fp32 {acc['fp32']['tweets-held-out']:.3f}, int8 {acc['int8']['tweets-held-out']:.3f}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
