"""Fixed costs a user meets outside training, each next to a floor measured in the same run.

    python benchmarks/overheads.py --quick
    python benchmarks/overheads.py                  # serving cold start with MiniLM

1. No-op `dvc repro` in a workspace with 2 trained rounds (tiny model, real DVC and MLflow), against
   `dvc repro` of a one-stage DVC project that is up to date (DVC's own floor).
2. `continual ingest` of a 10,000-row arrival (a fresh workspace each time), against `dvc add` of the same
   file in a fresh DVC project.
3. Serving cold start: `python -m service.serve --model-uri <saved HF folder>` until GET /v2/health/ready
   answers 200, against a bare Python process that imports transformers and loads the same folder.

Runs subprocesses with this interpreter's bin/ first on PATH. Writes overheads.json under --out.
"""
from __future__ import annotations

import csv
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

BIN = Path(sys.executable).parent


def main() -> None:
    parser = harness.arguments(__doc__)
    parser.add_argument("--ingest-rows", type=int)
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--ready-timeout", type=float, default=180)
    args = parser.parse_args()
    out = harness.prepare(args)
    bench = harness.settings(args, "overheads")
    repeats = args.repeats or bench["repeats"]
    work = harness.ROOT / "bench" / "work" / f"overheads-{bench['mode']}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    params = harness.training_params(args, {**bench, "model": "tiny"}, work)  # rounds: tiny model
    print(f"machine: {harness.describe(harness.machine())}\ncommand: {harness.command_line()}\n", flush=True)

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1", "PYTHONUNBUFFERED": "1",
           "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}
    result = {"mode": bench["mode"], "repeats": repeats}
    result["noop_repro"] = noop_repro(work, params, bench["rows_per_round"], max(3, repeats), env)
    result["ingest"] = ingest(work, args.ingest_rows or bench["ingest_rows"], repeats, env)
    model = args.base or bench["model"]
    result["serve"] = cold_start(work, model, params, repeats, args.ready_timeout, env)
    print(report(result), flush=True)
    harness.write_json(out, "overheads", result)


def timed(cmd: list[str], cwd: Path, env: dict) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return elapsed


def vader_csv(path: Path, domains: list[str], n: int) -> Path:
    """``n`` rows with distinct texts from VADER's domains, as a file `continual ingest` takes."""
    from continual.cli.demo import sample_domain

    rows, seen = [], set()
    for domain in domains:
        for row in sample_domain(domain, 0, 42):
            if row["text"] not in seen and len(rows) < n:
                seen.add(row["text"])
                rows.append(row)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def dvc_floor(folder: Path, env: dict) -> Path:
    """A DVC project whose one stage is up to date: what any no-op `dvc repro` costs."""
    folder.mkdir(parents=True)
    for cmd in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"],
                [str(BIN / "dvc"), "config", "core.analytics", "false"]):
        subprocess.run(cmd, cwd=folder, env=env, check=True)
    (folder / "dvc.yaml").write_text("stages:\n  copy:\n    cmd: cp in.txt out.txt\n    deps: [in.txt]\n"
                                     "    outs: [out.txt]\n")
    (folder / "in.txt").write_text("x\n")
    timed([str(BIN / "dvc"), "repro"], folder, env)
    return folder


def noop_repro(work: Path, params: dict, rows_per_round: int, repeats: int, env: dict) -> dict:
    import yaml

    from continual.workspace.create import create_workspace

    ws = create_workspace(work / "workspace")
    text = yaml.safe_load(ws.params_file.read_text())
    text["model"]["base"] = params["model"]["base"]
    text["train"].update({k: params["train"][k] for k in ("epochs", "lr", "threads")})
    ws.params_file.write_text(yaml.safe_dump(text, sort_keys=False))
    for domain in ("tweets", "amazon"):
        source = vader_csv(work / f"{domain}.csv", [domain], rows_per_round)
        timed([str(BIN / "continual"), "ingest", str(source), "--name", domain], ws.root, env)
    first = timed([str(BIN / "dvc"), "repro"], ws.root, env)  # trains both rounds
    assert len([p for p in ws.rounds_dir.iterdir() if p.is_dir()]) == 2
    before = {p: p.stat().st_mtime_ns for p in ws.rounds_dir.rglob("metrics.json")}
    floor = dvc_floor(work / "dvc-floor", env)
    ours, theirs = [], []
    for _ in range(repeats):
        ours.append(timed([str(BIN / "dvc"), "repro"], ws.root, env))
        theirs.append(timed([str(BIN / "dvc"), "repro"], floor, env))
    untouched = before == {p: p.stat().st_mtime_ns for p in ws.rounds_dir.rglob("metrics.json")}
    return {"first_repro_seconds": first, "noop_seconds": ours, "floor_seconds": theirs,
            "noop_median": statistics.median(ours), "floor_median": statistics.median(theirs),
            "ratio": statistics.median(ours) / statistics.median(theirs), "rounds_untouched": untouched}


def ingest(work: Path, rows: int, repeats: int, env: dict) -> dict:
    from continual.workspace.create import create_workspace

    source = vader_csv(work / "big.csv", ["movies", "nyt", "tweets", "amazon"], rows)
    ours, theirs = [], []
    for i in range(repeats):
        ws = create_workspace(work / f"ingest-{i}")
        ours.append(timed([str(BIN / "continual"), "ingest", str(source), "--name", "big"], ws.root, env))
        floor = work / f"dvc-add-{i}"
        floor.mkdir()
        subprocess.run(["git", "init", "-q"], cwd=floor, env=env, check=True)
        subprocess.run([str(BIN / "dvc"), "init", "-q"], cwd=floor, env=env, check=True)
        shutil.copyfile(source, floor / "big.csv")
        theirs.append(timed([str(BIN / "dvc"), "add", "big.csv"], floor, env))
    return {"rows": rows, "bytes": source.stat().st_size, "ingest_seconds": ours, "dvc_add_seconds": theirs,
            "ingest_median": statistics.median(ours), "dvc_add_median": statistics.median(theirs),
            "ratio": statistics.median(ours) / statistics.median(theirs)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cold_start(work: Path, model_name: str, params: dict, repeats: int, timeout: float, env: dict) -> dict:
    import requests

    from continual.model.encoder import new_classifier
    from continual.model.pretrained import base_model_path

    folder = work / "served-model"
    base = params["model"]["base"] if model_name == "tiny" else str(base_model_path(model_name))
    model, tokenizer = new_classifier(base, ["neg", "neu", "pos"], int(params["model"]["max_length"]))
    model.save(folder)
    tokenizer.save_pretrained(folder)
    bare = ("import sys; from service.pooled import PooledClassifier as M; from transformers import AutoTokenizer as T; "
            "M.load(sys.argv[1]); T.from_pretrained(sys.argv[1])")
    ours, theirs, errors = [], [], []
    for _ in range(repeats):
        theirs.append(timed([sys.executable, "-c", bare, str(folder)], work, env))
        port = free_port()
        log = work / f"serve-{port}.log"
        with log.open("w") as sink:
            proc = subprocess.Popen([sys.executable, "-m", "service.serve", "--model-uri", str(folder), "--port",
                                     str(port), "--workers", "1"], cwd=harness.ROOT, env=env, stdout=sink,
                                    stderr=subprocess.STDOUT)
        started = time.perf_counter()
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"exited with {proc.returncode}")
                if time.perf_counter() - started > timeout:
                    raise TimeoutError(f"not ready after {timeout:.0f} s")
                try:
                    if requests.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                        ours.append(time.perf_counter() - started)
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.05)
        except (RuntimeError, TimeoutError) as e:
            errors.append(f"{e}; log tail: {log.read_text()[-1500:]}")
        finally:
            harness.stop_process(proc)
    figures = {"model": model_name, "ready_seconds": ours, "bare_load_seconds": theirs, "errors": errors,
               "bare_median": statistics.median(theirs)}
    if ours:
        figures.update(ready_median=statistics.median(ours), ratio=statistics.median(ours) / figures["bare_median"])
    return figures


def report(result: dict) -> str:
    r, i, s = result["noop_repro"], result["ingest"], result["serve"]
    rows = [["no-op `dvc repro`, 2 trained rounds", f"{r['noop_median']:.2f}",
             "`dvc repro`, 1 up-to-date stage", f"{r['floor_median']:.2f}", f"{r['ratio']:.2f}x"],
            [f"`continual ingest`, {i['rows']:,} rows ({i['bytes'] / 1e6:.1f} MB)", f"{i['ingest_median']:.2f}",
             "`dvc add` of the same file", f"{i['dvc_add_median']:.2f}", f"{i['ratio']:.2f}x"]]
    if "ready_median" in s:
        rows.append([f"serving cold start ({s['model']}) to /v2/health/ready 200", f"{s['ready_median']:.2f}",
                     "python: import transformers + load the folder", f"{s['bare_median']:.2f}", f"{s['ratio']:.2f}x"])
    lines = [f"### overheads (median of {result['repeats']} runs; no-op repro of {len(r['noop_seconds'])})", "",
             harness.markdown_table(["what", "seconds", "floor measured beside it", "floor s", "ratio"], rows), "",
             f"- first `dvc repro` (trains both tiny rounds, logs to MLflow): {r['first_repro_seconds']:.1f} s; "
             f"no-op runs left the rounds untouched: {r['rounds_untouched']}",
             f"- ingest throughput: {i['rows'] / i['ingest_median']:,.0f} rows/s"]
    if s["errors"]:
        lines.append(f"- serving cold start FAILED {len(s['errors'])} of {result['repeats']} times: {s['errors'][0]}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
