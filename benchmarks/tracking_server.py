"""Tracking overhead per round: `continual track` against the workspace's SQLite store and against a team
server (`mlflow server` on loopback, PostgreSQL behind it, its own artifact root), side by side in one run.

    python benchmarks/tracking_server.py             # 5 rounds
    python benchmarks/tracking_server.py --quick     # 2 rounds

One tiny-model workspace (replay+ewc, ONNX export on: a round folder as `dvc repro` writes it) trains N rounds
once. Then, round by round, the stream is cut to its first i rounds and `continual track` runs as the track stage
would after round i: it logs round i (run, metrics, plots, the registered model version) and gates it. The two
stores alternate at each round, each starting empty, so a busy moment on a shared machine hits both. A second
`continual track` right after (nothing to log, the newest round gated before) gives the fixed cost of the stage
itself: process start, imports, the queries that find the logged runs. Every figure is a whole process, as
`dvc repro` pays it. PostgreSQL and the server start as the tests start them (tests/team_server.py).
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

sys.path.insert(0, str(harness.ROOT / "tests"))
from team_server import mlflow_server, postgres  # noqa: E402

BIN = Path(sys.executable).parent
LABELS = ({"neg": "awful dreadful", "pos": "lovely splendid"}, {"neg": "broken useless", "pos": "works nicely"},
          {"neg": "cold bland", "neu": "plain okay", "pos": "tasty fresh"})


def main() -> None:
    parser = harness.arguments(__doc__)
    parser.add_argument("--rounds", type=int, help="rounds in the stream (default: benchmarks/params.yaml)")
    args = parser.parse_args()
    out = harness.prepare(args)
    bench = harness.settings(args, "tracking_server")
    rounds = args.rounds or bench["rounds"]
    work = harness.ROOT / "bench" / "work" / f"tracking-server-{bench['mode']}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    print(f"machine: {harness.describe(harness.machine())}\ncommand: {harness.command_line()}\n", flush=True)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1", "TQDM_DISABLE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)

    ws = trained_stream(work, harness.training_params(args, {**bench, "model": "tiny"}, work), rounds,
                        bench["rows_per_label"], env)
    with postgres() as database, mlflow_server(database, work) as server:
        stores = {"sqlite": (env, None), "server": ({**env, "MLFLOW_TRACKING_URI": server.uri}, server.log)}
        result = {"mode": bench["mode"], "rounds": rounds, "setup": "mlflow server (1 worker) on PostgreSQL, "
                  "artifacts proxied to a local folder, 127.0.0.1", "load_before": os.getloadavg(),
                  **measure(ws, stores), "load_after": os.getloadavg()}
    print(report(result), flush=True)
    harness.write_json(out, "tracking_server", result)


def trained_stream(work: Path, params: dict, rounds: int, rows_per_label: int, env: dict) -> Path:
    """A workspace with ``rounds`` trained rounds; its own tracking store removed afterwards."""
    ws = work / "stream"
    run([BIN / "continual", "init", ws], work, env)
    text = yaml.safe_load((ws / "params.yaml").read_text())
    text["model"]["base"] = params["model"]["base"]
    text["train"].update(params["train"])
    text["strategy"]["replay"]["mem_size"] = 20
    (ws / "params.yaml").write_text(yaml.safe_dump(text, sort_keys=False))
    for i in range(rounds):
        labels = LABELS[i % len(LABELS)]
        rows = ["text,label"] + [f"{words} round {i} number {n},{label}" for label, words in labels.items()
                                 for n in range(rows_per_label)]
        (work / f"arrival{i}.csv").write_text("\n".join(rows) + "\n")
        run([BIN / "continual", "ingest", work / f"arrival{i}.csv", "--name", f"a{i + 1}"], ws, env)
    started = time.perf_counter()
    run([BIN / "dvc", "repro"], ws, env)
    print(f"trained {rounds} rounds in {time.perf_counter() - started:.0f} s", flush=True)
    (ws / "mlflow.db").unlink()
    shutil.rmtree(ws / "mlartifacts")
    return ws


def requests_in(log: Path | None) -> int:
    """HTTP requests the server has answered so far (its access log), 0 for a store without one."""
    return sum(1 for line in log.open() if ' HTTP/1.1" ' in line) if log else 0  # uvicorn's access lines


def measure(ws: Path, stores: dict[str, tuple[dict, Path | None]]) -> dict:
    """Per store: seconds of `continual track` logging round i, of a second one with nothing to log, and the
    requests each made (the server only)."""
    from continual.workspace.layout import Workspace

    workspace = Workspace.at(ws)
    keys, stream = workspace.stream(), workspace.stream_file.read_text()
    log, noop = {name: [] for name in stores}, {name: [] for name in stores}
    calls, noop_calls = {name: [] for name in stores}, {name: [] for name in stores}
    try:
        for i in range(1, len(keys) + 1):
            workspace.stream_file.write_text(workspace.stream_text(keys[:i]))
            for name, (env, access_log) in stores.items():
                before = requests_in(access_log)
                output, seconds = run([BIN / "continual", "track"], ws, env)
                if "1 were missing from MLflow and are now logged" not in output:
                    raise RuntimeError(f"{name}: round {i} was not logged:\n{output[-2000:]}")
                middle = requests_in(access_log)
                log[name].append(seconds)
                noop[name].append(run([BIN / "continual", "track"], ws, env)[1])
                calls[name].append(middle - before)
                noop_calls[name].append(requests_in(access_log) - middle)
                print(f"round {i} {name:>6}: track {seconds:5.2f} s ({calls[name][-1]} requests), again (nothing to "
                      f"log) {noop[name][-1]:5.2f} s ({noop_calls[name][-1]} requests)", flush=True)
    finally:
        workspace.stream_file.write_text(stream)
    figures = {}
    for name in stores:
        later = log[name][1:] or log[name]
        figures[name] = {"track_seconds": log[name], "noop_seconds": noop[name],
                         "mean_seconds_per_round": statistics.fmean(log[name]),
                         "mean_after_round_1": statistics.fmean(later),
                         "noop_median": statistics.median(noop[name]),
                         "requests_per_round": calls[name], "noop_requests": noop_calls[name]}
    return figures


def run(cmd: list, cwd: Path, env: dict) -> tuple[str, float]:
    started = time.perf_counter()
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed in {cwd}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return done.stdout, seconds


def report(result: dict) -> str:
    sqlite, server = result["sqlite"], result["server"]
    rows = [[f"round {i + 1}", f"{a:.2f}", f"{b:.2f}", f"{b / a:.2f}x"]
            for i, (a, b) in enumerate(zip(sqlite["track_seconds"], server["track_seconds"]))]
    rows.append(["mean per round", f"{sqlite['mean_seconds_per_round']:.2f}", f"{server['mean_seconds_per_round']:.2f}",
                 f"{server['mean_seconds_per_round'] / sqlite['mean_seconds_per_round']:.2f}x"])
    rows.append(["mean per round after round 1", f"{sqlite['mean_after_round_1']:.2f}",
                 f"{server['mean_after_round_1']:.2f}",
                 f"{server['mean_after_round_1'] / sqlite['mean_after_round_1']:.2f}x"])
    rows.append(["`continual track` with nothing to log (median)", f"{sqlite['noop_median']:.2f}",
                 f"{server['noop_median']:.2f}", f"{server['noop_median'] / sqlite['noop_median']:.2f}x"])
    rows.append(["HTTP requests a round (logging; nothing to log)", "-",
                 f"{statistics.median(server['requests_per_round']):.0f}; "
                 f"{statistics.median(server['noop_requests']):.0f}", "-"])
    return harness.markdown_table(["`continual track` (s)", "SQLite (workspace)", "team server", "server / SQLite"],
                                  rows)


if __name__ == "__main__":
    main()
