"""Serving soak: gunicorn under load, the alias moved every 30 s, one worker killed -9 half way, while slow
clients hold connections with half-sent heads and bodies (reconnecting each time the server cuts them off) and
one client pipelines three requests at a time on a keep-alive connection."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from chaos_suite.common import ENV, ROOT, free_port, log


def register(uri: str, model_dir: Path, name: str, round_index: int) -> str:
    """Log ``model_dir`` as a round logs it (pyfunc) and tag the version as rounds do."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    from continual.registry.register import log_pooled_model

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("chaos")
    artifacts = Path(uri.removeprefix("sqlite:///")).parent / "artifacts"
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(
        "chaos", artifact_location=artifacts.as_uri())
    with _use_tracking_uri(uri), mlflow.start_run(experiment_id=experiment_id):
        info = log_pooled_model(model_dir, registered_model_name=name)
    version = str(info.registered_model_version)
    for key, value in {"round": str(round_index), "round_key": f"{round_index:04d}-chaos", "arrival": "chaos"}.items():
        client.set_model_version_tag(name, version, key, value)
    return version


class Server:
    """`python -m service.serve` on 127.0.0.1 in its own process group, its log in a file."""

    def __init__(self, folder: Path, args: list[str], workers: int, env: dict | None = None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = folder / "server.log"
        prometheus = folder / "prometheus"
        shutil.rmtree(prometheus, ignore_errors=True)
        environment = {**ENV, "PROMETHEUS_MULTIPROC_DIR": str(prometheus), **(env or {})}
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "service.serve", *args, "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", str(workers), "--threads", "4", "--set", "compute_threads=1", "--set", "max_length=32"],
                cwd=ROOT, env=environment, stdout=out, stderr=subprocess.STDOUT, process_group=0)

    def wait_ready(self, timeout: float = 300) -> None:
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log.read_text()[-2000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.base}/v2/health/ready", timeout=2).status_code == 200:
                    return
            time.sleep(0.3)
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log.read_text()[-2000:]}")

    def workers(self) -> list[int]:
        import psutil

        with contextlib.suppress(psutil.Error):
            return [child.pid for child in psutil.Process(self.proc.pid).children()]
        return []

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)  # gunicorn's quick stop
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


PREDICT = json.dumps({"texts": ["a slow client's text"]}).encode()
PREDICT_REQUEST = (b"POST /predict HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
                   + f"Content-Length: {len(PREDICT)}\r\n\r\n".encode() + PREDICT)
HALF_HEAD = PREDICT_REQUEST[:30]
HALF_BODY = (b"POST /predict HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n"
             b"Content-Length: 1000\r\n\r\n" + b'{"texts": ["' + b"x" * 480)
PIPELINED = (b"GET /v2/health/live HTTP/1.1\r\nHost: soak\r\n\r\n" + PREDICT_REQUEST
             + b"GET /no/such/route HTTP/1.1\r\nHost: soak\r\n\r\n")


def slow_client(port: int, payload: bytes, stop: threading.Event, tally: dict) -> None:
    """Send half a request and wait; when the server cuts the connection off, note how, and start again."""
    while not stop.is_set():
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            tally["connect_failed"] += 1
            stop.wait(1)
            continue
        with sock:
            opened = time.monotonic()
            received = b""
            with contextlib.suppress(OSError):
                sock.sendall(payload)
                sock.settimeout(1)
                while not stop.is_set():
                    try:
                        chunk = sock.recv(4096)
                    except TimeoutError:
                        continue
                    if not chunk:
                        break
                    received += chunk
            if stop.is_set():
                tally["held_at_end"] += 1
                return
            status = received.split(b" ", 2)[1].decode() if received.startswith(b"HTTP/1.1 ") else "closed"
            tally[f"cut_{status}"] = tally.get(f"cut_{status}", 0) + 1
            tally["held_s"].append(time.monotonic() - opened)


def pipelining_client(port: int, stop: threading.Event, tally: dict) -> None:
    """Three pipelined requests per round trip on one keep-alive connection: all three answered, in order."""
    stream = sock = None
    while not stop.wait(0.5):
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                stream = sock.makefile("rb")
            sock.sendall(PIPELINED)
            statuses = [_read_status(stream) for _ in range(3)]
            tally["batches"] += 1
            tally["in_order" if statuses == [200, 200, 404] else "wrong"] += 1
        except (OSError, ValueError) as error:
            tally["errors"].append(type(error).__name__)
            with contextlib.suppress(OSError):
                sock.close()
            sock = None
    with contextlib.suppress(OSError, AttributeError):
        sock.close()


def _read_status(stream) -> int:
    status_line = stream.readline()
    if not status_line.startswith(b"HTTP/1.1 "):
        raise ValueError(f"not a response: {status_line[:60]!r}")
    length = 0
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    stream.read(length)
    return int(status_line.split()[1])


def section_soak(args, ctx: dict) -> dict:
    import psutil
    import requests
    from mlflow import MlflowClient

    from continual.model.encoder import make_tiny_model

    work = ctx["work"] / "soak"
    work.mkdir(parents=True)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    name = "soak"
    versions = [register(uri, ctx["tiny"], name, 1),
                register(uri, make_tiny_model(work / "v2", ["neg", "neu", "pos"], seed=1), name, 2)]
    client = MlflowClient(uri)
    client.set_registered_model_alias(name, "champion", versions[0])
    server = Server(work, ["--registered-model", name, "--tracking-uri", uri, "--poll-seconds", "2"], workers=2)
    duration = float(args.soak_seconds)
    answers: list[tuple[float, str, str]] = []  # (time since start, outcome, version)
    rss: dict[int, list[tuple[float, int]]] = {}
    stop = threading.Event()
    events: dict[str, Any] = {"swaps": [], "killed": None}
    slow: dict[str, Any] = {"connect_failed": 0, "held_at_end": 0, "held_s": []}
    pipelined: dict[str, Any] = {"batches": 0, "in_order": 0, "wrong": 0, "errors": []}
    try:
        server.wait_ready()
        start = time.monotonic()

        def client_loop(slot: int) -> None:
            session = requests.Session()
            i = 0
            while not stop.is_set():
                i += 1
                at = time.monotonic() - start
                try:
                    response = session.post(f"{server.base}/predict", timeout=30,
                                            json={"texts": [f"soak client {slot} request {i}", "a second text"]})
                    try:
                        body = response.json()
                        outcome = "ok" if response.status_code == 200 else f"http {response.status_code}"
                        version = str((body.get("model") or {}).get("version", ""))
                    except ValueError:
                        outcome, version = f"not json (http {response.status_code})", ""
                except requests.RequestException as error:
                    outcome, version = f"error {type(error).__name__}", ""
                answers.append((at, outcome, version))

        def swapper() -> None:
            current = 0
            while not stop.wait(30):
                current = 1 - current
                client.set_registered_model_alias(name, "champion", versions[current])
                events["swaps"].append((round(time.monotonic() - start, 1), versions[current]))

        def sampler() -> None:
            while not stop.wait(5):
                at = time.monotonic() - start
                for pid in [server.proc.pid, *server.workers()]:
                    with contextlib.suppress(psutil.Error):
                        rss.setdefault(pid, []).append((at, psutil.Process(pid).memory_info().rss))

        threads = [threading.Thread(target=client_loop, args=(slot,), daemon=True) for slot in range(args.soak_clients)]
        threads += [threading.Thread(target=swapper, daemon=True), threading.Thread(target=sampler, daemon=True)]
        threads += [threading.Thread(target=slow_client, daemon=True,
                                     args=(server.port, HALF_HEAD if slot % 5 else HALF_BODY, stop, slow))
                    for slot in range(args.slow_clients)]
        threads.append(threading.Thread(target=pipelining_client, args=(server.port, stop, pipelined), daemon=True))
        for thread in threads:
            thread.start()
        time.sleep(duration / 2)
        # The worker holding the clients' keep-alive connections: killing an idle one would prove nothing.
        held = {pid: _connections(pid, server.port) for pid in server.workers()}
        victim = max(held, key=held.get)
        os.kill(victim, signal.SIGKILL)
        events["killed"] = (round(time.monotonic() - start, 1), victim)
        events["connections_held"] = held
        log(f"soak: killed worker {victim} at {events['killed'][0]} s, holding {held[victim]} of the clients' "
            f"connections ({held})")
        time.sleep(duration / 2)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        final_workers = server.workers()
    finally:
        stop.set()
        server.stop()
    killed_at = events["killed"][0]
    failures = [(at, outcome) for at, outcome, _ in answers if outcome != "ok"]
    held = [f for f in failures if killed_at - 1 <= f[0] <= killed_at + 30 and f[1].startswith("error")]
    warm = min(30.0, duration / 4)
    growth = {}
    for pid, samples in rss.items():  # each process from `warm` seconds after its first sample (a respawn loads first)
        later = [(at, value) for at, value in samples if at >= samples[0][0] + warm]
        if len(later) >= 2 and pid != events["killed"][1]:
            role = "master" if pid == server.proc.pid else ("respawned worker" if pid in final_workers and
                                                            samples[0][0] > killed_at else "worker")
            growth[f"{role} {pid}"] = {"first_mb": round(later[0][1] / 2**20, 1), "last_mb": round(later[-1][1] / 2**20, 1),
                                       "growth": round(later[-1][1] / later[0][1] - 1, 4),
                                       "from_s": round(later[0][0]), "to_s": round(later[-1][0])}
    served = sorted({version for _, outcome, version in answers if outcome == "ok"})
    result = {"duration_s": duration, "clients": args.soak_clients, "requests": len(answers), "failed": len(failures),
              "failed_held_by_killed_worker": len(held), "failed_other": len(failures) - len(held),
              "failure_kinds": sorted({outcome for _, outcome in failures}), "swaps": events["swaps"],
              "killed": events["killed"], "connections_held_at_kill": {str(k): v for k, v in
                                                                       events.get("connections_held", {}).items()},
              "versions_served": served, "rss": growth,
              "rss_series_mb": {str(pid): [(round(at), round(value / 2**20, 1)) for at, value in samples[::6]]
                                for pid, samples in rss.items()},
              "max_rss_growth": max((g["growth"] for g in growth.values()), default=None),
              "slow_clients": args.slow_clients,
              "slow": {**{k: v for k, v in slow.items() if k != "held_s"},
                       "cut": len(slow["held_s"]),
                       "median_held_s": round(sorted(slow["held_s"])[len(slow["held_s"]) // 2], 1)
                       if slow["held_s"] else None},
              "pipelined": {**pipelined, "errors": len(pipelined["errors"]),
                            "error_kinds": sorted(set(pipelined["errors"]))}}
    log(f"soak: {len(answers)} requests in {duration:.0f} s, {len(failures)} failed ({len(held)} held by the killed "
        f"worker), {len(events['swaps'])} swaps, versions served {served}, RSS growth {result['max_rss_growth']}")
    return result


def _connections(pid: int, port: int) -> int:
    import psutil

    try:
        return sum(1 for c in psutil.Process(pid).net_connections("tcp")
                   if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port)
    except psutil.Error:
        return 0


def summarise_soak(result: dict) -> list[tuple[str, str, str]]:
    growth = ", ".join(f"{role.rsplit(' ', 1)[0]} {g['first_mb']:.0f}->{g['last_mb']:.0f} MB ({g['growth'] * 100:+.1f}%)"
                       for role, g in result["rss"].items())
    return [
        ("soak", f"{result['duration_s'] / 60:.1f} min, {result['clients']} clients, 2 workers, alias moved every 30 s",
         f"{result['requests']} requests, {len(result['swaps'])} swaps, versions {','.join(result['versions_served'])}"),
        ("soak", "failed requests (held by the worker killed -9 half way / other)",
         f"{result['failed_held_by_killed_worker']} / {result['failed_other']} (it held "
         f"{max(result['connections_held_at_kill'].values(), default=0)} of "
         f"{sum(result['connections_held_at_kill'].values())} connections)"),
        ("soak", "RSS growth after warm-up (target < 10%)", growth or "-"),
        ("soak", f"{result['slow_clients']} slow clients (half a head, or half a body): connections cut, by answer",
         f"{result['slow']['cut']} ({', '.join(f'{k[4:]}: {v}' for k, v in result['slow'].items() if k.startswith('cut_'))}"
         f"), median held {result['slow']['median_held_s']} s"),
        ("soak", "pipelined batches of 3: answered in order / wrong / connection errors",
         f"{result['pipelined']['in_order']} / {result['pipelined']['wrong']} / {result['pipelined']['errors']}"),
    ]
