"""Load test on loopback: our Flask service vs `mlflow models serve`, same registered MiniLM model, one run.

    make bench-serve        # = python benchmarks/serve_bench.py --seconds 15

Both servers load `models:/bench-minilm@champion` from a fresh SQLite registry. For each concurrency level
(1, 8, 32 clients, each sending one text per request, back to back) we measure ours, then MLflow's,
then report throughput and p50/p99 latency side by side, with the ratio. The bare model forward on one
text (no HTTP) is measured in this process first, while both servers are idle.
"""
from __future__ import annotations

import argparse
import csv
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

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def register_minilm(tmp: Path) -> str:
    import mlflow
    from mlflow import MlflowClient

    from continual.model import base_model_path, new_classifier
    from continual.tracking import log_pooled_model

    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    experiment = client.create_experiment("bench", artifact_location=(tmp / "artifacts").as_uri())
    model, tokenizer = new_classifier(base_model_path("minilm"), ["neg", "neu", "pos"], 128)
    model.save(tmp / "minilm")  # a round's model folder, logged as a round logs it (pyfunc)
    tokenizer.save_pretrained(tmp / "minilm")
    with mlflow.start_run(experiment_id=experiment):
        info = log_pooled_model(tmp / "minilm", registered_model_name="bench-minilm")
    client.set_registered_model_alias("bench-minilm", "champion", info.registered_model_version)
    return uri


def bare_forward_ms(texts: list[str], n: int = 200) -> float:
    import torch

    from continual.model import base_model_path, new_classifier

    model, tokenizer = new_classifier(base_model_path("minilm"), ["neg", "neu", "pos"], 128)
    model.eval()
    times = []
    with torch.inference_mode():
        for i in range(n):
            start = time.perf_counter()
            batch = tokenizer([texts[i % len(texts)]], return_tensors="pt", truncation=True, max_length=128)
            model(batch["input_ids"], batch["attention_mask"])
            times.append(time.perf_counter() - start)
    return statistics.median(times[20:]) * 1000


def wait_ready(url: str, proc: subprocess.Popen, start: float, timeout: float = 180) -> float:
    """Seconds from ``start`` (the process's launch) until ``url`` answers 200."""
    while time.perf_counter() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return time.perf_counter() - start
        except requests.RequestException:
            pass
        time.sleep(0.2)
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
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    return {"rps": len(latencies) / wall, "p50": pick(0.50), "p99": pick(0.99), "n": len(latencies),
            "errors": errors[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="service config for our server, e.g. --set max_wait_ms=2")
    args = parser.parse_args()
    with open(ROOT / "data" / "vader" / "tweets.csv", encoding="utf-8") as f:
        texts = [row["text"] for row in csv.DictReader(f)][:500]
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    bare = bare_forward_ms(texts)
    with tempfile.TemporaryDirectory() as tmp:
        uri = register_minilm(Path(tmp))
        env["MLFLOW_TRACKING_URI"] = uri
        ours_port, theirs_port = free_port(), free_port()
        launched = time.perf_counter()
        ours = subprocess.Popen([str(BIN / "python"), "-m", "service.serve", "--registered-model", "bench-minilm",
                                 "--port", str(ours_port), "--workers", "1", "--threads", "48",
                                 *(f"--set={kv}" for kv in args.set)],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        theirs = subprocess.Popen([str(BIN / "mlflow"), "models", "serve", "-m", "models:/bench-minilm@champion",
                                   "--env-manager", "local", "-h", "127.0.0.1", "-p", str(theirs_port)],
                                  cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            cold_ours = wait_ready(f"http://127.0.0.1:{ours_port}/v2/health/ready", ours, launched)
            cold_theirs = wait_ready(f"http://127.0.0.1:{theirs_port}/ping", theirs, launched)
            rows = []
            for clients in (int(c) for c in args.levels.split(",")):
                a = load(f"http://127.0.0.1:{ours_port}/predict", lambda t: {"texts": [t]}, texts, clients,
                         args.seconds)
                b = load(f"http://127.0.0.1:{theirs_port}/invocations", lambda t: {"inputs": [t]}, texts, clients,
                         args.seconds)
                rows.append((clients, a, b))
        finally:
            for proc in (ours, theirs):
                proc.terminate()
                proc.wait(timeout=30)
    print(f"bare model forward, one text, median: {bare:.1f} ms")
    print(f"ready after start (both starting together): ours {cold_ours:.1f} s, mlflow {cold_theirs:.1f} s\n")
    print("| clients | ours req/s | mlflow req/s | throughput ratio | ours p50 ms | ours p99 ms | mlflow p50 ms "
          "| mlflow p99 ms | errors (ours/mlflow) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for clients, a, b in rows:
        print(f"| {clients} | {a['rps']:.1f} | {b['rps']:.1f} | {a['rps'] / b['rps']:.2f}x | {a['p50']:.1f} | "
              f"{a['p99']:.1f} | {b['p50']:.1f} | {b['p99']:.1f} | {a['errors']}/{b['errors']} |")
    p99_one = rows[0][1]["p99"]
    print(f"\nours p99 at 1 client / bare forward: {p99_one / bare:.2f}x")


if __name__ == "__main__":
    main()
