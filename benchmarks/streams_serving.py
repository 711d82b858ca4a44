"""Many streams, one server: the memory of each extra MiniLM model, and one stream's hot swap under load on the others.

    python benchmarks/streams_serving.py            # about 6 minutes on 2 cores

The champion of benchmarks/serve_bench.py (MiniLM with a ridge head fitted on 300 VADER tweets, exported to ONNX and
quantized as a round does it, tagged with the gate's int8 check) is registered as three registered models, stream-1,
stream-2 and stream-3, in one SQLite registry (their versions share the logged artifacts). Then:

1. Memory: `service.serve` with 1 worker serves 1, 2, then 3 of them (`--model NAME=models:/NAME@champion`), on the
   auto backend (int8 ONNX, which the gate passed) and on torch. After 20 requests to each stream, the worker's RSS
   and USS (psutil) are read; the cost of an extra model is the slope from 1 to 3 models.
2. Swap under load: 3 streams on the auto backend with the default workers (one per core, at most 4), the registry
   polled every second. Client threads (one text per request, back to back; half V2 infer, half /predict) load
   stream-2 and stream-3 for --seconds while stream-1's alias moves to a new version after a fifth of them. Every
   failed request on stream-2 and stream-3 is counted; stream-1 must report the new version on every worker.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402
import serve_bench  # noqa: E402

STREAMS = ("stream-1", "stream-2", "stream-3")
BACKENDS = {"auto (int8)": [], "torch": ["--backend", "torch"]}


def register_streams(uri: str) -> None:
    """stream-1..3 at version 1 (champion) and stream-1 version 2, all on the champion's logged artifacts."""
    from mlflow import MlflowClient

    from service.registry_tags import INT8_GATE_TAG

    client = MlflowClient(uri)
    champion = client.get_model_version_by_alias(serve_bench.NAME, "champion")
    gate = champion.tags[INT8_GATE_TAG]
    for name in STREAMS:
        client.create_registered_model(name)
        for _ in range(2 if name == "stream-1" else 1):
            version = client.create_model_version(name, champion.source, run_id=champion.run_id).version
            client.set_model_version_tag(name, version, INT8_GATE_TAG, gate)
        client.set_registered_model_alias(name, "champion", "1")


def start_server(names: tuple[str, ...], extra: list[str], env: dict, workers: int | None = None
                 ) -> tuple[subprocess.Popen, str]:
    """``service.serve`` on the streams ``names`` (``workers`` None: the server's default), once each is READY."""
    port = serve_bench.free_port()
    models = [arg for name in names for arg in ("--model", f"{name}=models:/{name}@champion")]
    command = serve_bench.serve_command(port, *models, *(["--workers", str(workers)] if workers else []), *extra)
    proc = serve_bench.start(command, env, harness.ROOT)
    base = f"http://127.0.0.1:{port}"
    serve_bench.wait_ready(f"{base}/v2/health/ready", proc, time.perf_counter())
    index = requests.post(f"{base}/v2/repository/index", timeout=10).json()
    if [entry["state"] for entry in index] != ["READY"] * len(names):
        harness.stop_process(proc)
        raise RuntimeError(f"not every stream is READY: {index}")
    return proc, base


def infer_body(text: str) -> dict:
    return {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]}


def worker_memory(proc: subprocess.Popen) -> dict:
    workers = psutil.Process(proc.pid).children()
    if len(workers) != 1:
        raise RuntimeError(f"expected one gunicorn worker, found {len(workers)}")
    info = workers[0].memory_full_info()
    return {"rss_mb": info.rss / 2**20, "uss_mb": info.uss / 2**20}


def memory(env: dict, texts: list[str]) -> dict:
    result: dict = {}
    for backend, extra in BACKENDS.items():
        result[backend] = {}
        for count in (1, 2, 3):
            names = STREAMS[:count]
            proc, base = start_server(names, extra, env, workers=1)
            try:
                session = requests.Session()
                for name in names:
                    for text in texts[:20]:
                        answer = session.post(f"{base}/v2/models/{name}/infer", json=infer_body(text), timeout=60)
                        answer.raise_for_status()
                time.sleep(2)  # let the allocator and the background threads settle
                result[backend][count] = worker_memory(proc)
            finally:
                harness.stop_process(proc)
            print(f"{backend}, {count} model(s): worker RSS {result[backend][count]['rss_mb']:.0f} MB", file=sys.stderr,
                  flush=True)
    return result


def swap_under_load(env: dict, texts: list[str], seconds: float, clients: int, uri: str) -> dict:
    from mlflow import MlflowClient

    proc, base = start_server(STREAMS, ["--poll-seconds", "1"], env)
    stop, lock = threading.Event(), threading.Lock()
    results: dict[str, dict] = {name: {"ok": 0, "failed": 0, "latencies": [], "failures": []} for name in STREAMS[1:]}

    def client(slot: int) -> None:
        name, session, i = STREAMS[1 + slot % 2], requests.Session(), slot
        while not stop.is_set():
            text = texts[i % len(texts)]
            i += clients
            started = time.perf_counter()
            try:
                if slot % 4 < 2:
                    response = session.post(f"{base}/v2/models/{name}/infer", json=infer_body(text), timeout=30)
                    ok = response.status_code == 200 and response.json()["model_version"] == "1"
                else:
                    response = session.post(f"{base}/predict", json={"texts": [text], "model": name}, timeout=30)
                    ok = response.status_code == 200 and response.json()["model"]["version"] == "1"
                detail = f"{response.status_code}"
            except requests.RequestException as error:
                ok, detail = False, type(error).__name__
            elapsed = time.perf_counter() - started
            with lock:
                entry = results[name]
                entry["ok" if ok else "failed"] += 1
                if ok:
                    entry["latencies"].append(elapsed)
                elif len(entry["failures"]) < 10:
                    entry["failures"].append(detail)

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    try:
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        time.sleep(seconds / 5)
        MlflowClient(uri).set_registered_model_alias("stream-1", "champion", "2")
        moved = time.perf_counter()
        swapped_after = None
        while time.perf_counter() - began < seconds:
            if swapped_after is None and all_on_version(base, "stream-1", "2"):
                swapped_after = time.perf_counter() - moved
            time.sleep(0.2)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        wall = time.perf_counter() - began
        index = requests.post(f"{base}/v2/repository/index", timeout=10).json()
        workers = len(psutil.Process(proc.pid).children())
    finally:
        harness.stop_process(proc)
    summary = {"seconds": wall, "clients": clients, "workers": workers, "swapped_after_s": swapped_after,
               "index": index, "streams": {}}
    for name, entry in results.items():
        latencies = sorted(entry["latencies"])
        summary["streams"][name] = {"ok": entry["ok"], "failed": entry["failed"], "failures": entry["failures"],
                                    "rps": entry["ok"] / wall, "p50_ms": percentile_ms(latencies, 0.5),
                                    "p99_ms": percentile_ms(latencies, 0.99)}
    return summary


def percentile_ms(ordered: list[float], q: float) -> float | None:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else None


def all_on_version(base: str, name: str, version: str, tries: int = 8) -> bool:
    """True when ``tries`` answers on new connections (any worker may take each) all come from ``version``."""
    for _ in range(tries):
        answer = requests.post(f"{base}/v2/models/{name}/infer", json=infer_body("x"), timeout=30).json()
        if answer.get("model_version") != version:
            return False
    return True


def report(result: dict) -> str:
    rows = []
    for backend, counts in result["memory"].items():
        per_model = (counts[3]["rss_mb"] - counts[1]["rss_mb"]) / 2
        per_model_uss = (counts[3]["uss_mb"] - counts[1]["uss_mb"]) / 2
        rows.append([backend, *(f"{counts[n]['rss_mb']:.0f}" for n in (1, 2, 3)), f"{per_model:.0f}",
                     f"{per_model_uss:.0f}"])
    swap = result["swap"]
    lines = [harness.markdown_table(["backend", "worker RSS, 1 model (MB)", "2 models", "3 models",
                                     "per extra model, RSS (MB)", "per extra model, USS (MB)"], rows), ""]
    load_rows = [[name, s["ok"], s["failed"], f"{s['rps']:.1f}", f"{s['p50_ms']:.1f}", f"{s['p99_ms']:.1f}"]
                 for name, s in swap["streams"].items()]
    lines += [f"Swap under load: {swap['clients']} clients on stream-2 and stream-3 for {swap['seconds']:.0f} s, "
              f"{swap['workers']} workers; stream-1's alias moved after {swap['seconds'] / 5:.0f} s and every worker "
              f"served the new version {swap['swapped_after_s']:.1f} s later." if swap["swapped_after_s"] is not None
              else "Swap under load: stream-1 never reported the new version on every worker.", "",
              harness.markdown_table(["stream", "answered", "failed", "req/s", "p50 ms", "p99 ms"], load_rows), "",
              f"- failed requests on the streams not swapped: **{sum(s['failed'] for s in swap['streams'].values())}**"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20, help="length of the swap-under-load run")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--out", type=Path, default=harness.ROOT / "bench" / "streams")
    args = parser.parse_args()
    texts = [row["text"] for row in serve_bench.tweets()][:500]
    env = {**os.environ, "PATH": f"{serve_bench.BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.pop("CONTINUAL_SERVE_WORKERS", None)
    with tempfile.TemporaryDirectory() as tmp:
        uri, _, _ = serve_bench.build_champion(Path(tmp))
        register_streams(uri)
        env["MLFLOW_TRACKING_URI"] = uri
        result = {"cores": len(os.sched_getaffinity(0)), "memory": memory(env, texts)}
        result["swap"] = swap_under_load(env, texts, args.seconds, args.clients, uri)
    args.out.mkdir(parents=True, exist_ok=True)
    harness.write_json(args.out, "streams_serving", result)
    print(report(result))


if __name__ == "__main__":
    main()
