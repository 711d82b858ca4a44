"""A large arrival: 100,000 short rows (two labels) through `continual ingest` and `dvc repro` in a tiny-model
workspace. Every line either command prints (stdout and stderr, tqdm's carriage-return updates included) is
timestamped as it arrives; the section reports the seconds of each command and stage, the round's own phase
seconds (metrics.json), and every silence longer than the target (issue 22: progress at least every 10 s)."""
from __future__ import annotations

import json
import os
import re
import selectors
import subprocess
import time
from pathlib import Path
from typing import Any

from chaos_suite.common import BIN, ENV, log, make_workspace

ROWS = 100_000
STRATEGY = "adapt"  # the shipped default: the first round fine-tunes the encoder (one epoch), then a ridge head
SILENCE_TARGET_S = 10.0
WORDS = {"pos": ("lovely", "splendid", "great", "fine", "happy", "sunny", "kind", "bright"),
         "neg": ("awful", "dreadful", "broken", "sad", "gloomy", "rude", "dull", "bitter")}


def set_strategy(ws: Path, name: str) -> None:
    import yaml

    from chaos_suite.common import sh

    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["strategy"]["name"] = name
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))
    git = ["git", "-c", "user.name=chaos", "-c", "user.email=chaos@localhost", "-c", "commit.gpgsign=false"]
    sh([*git, "commit", "-qam", f"strategy {name}"], ws)


def large_csv(path: Path, rows: int = ROWS) -> Path:
    """``rows`` distinct short texts (four to six words), half of each label."""
    lines = ["text,label"]
    for i in range(rows):
        label = "pos" if i % 2 else "neg"
        words = WORDS[label]
        lines.append(f"{words[i % 8]} {words[(i // 8) % 8]} day number {i},{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


def watched(cmd: list, cwd: Path, timeout: float = 7200) -> dict[str, Any]:
    """Run ``cmd`` with its stdout and stderr on one pipe (not a terminal, as under CI or nohup), timestamping
    each line as it arrives; a carriage return ends a line too (tqdm's updates)."""
    began = time.perf_counter()
    proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    lines: list[tuple[float, str]] = []
    pending = b""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while True:
            if time.perf_counter() - began > timeout:
                proc.kill()
                break
            if not selector.select(timeout=1.0):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            now = time.perf_counter() - began
            parts = re.split(rb"[\r\n]", pending + chunk)
            pending = parts.pop()
            lines += [(now, part.decode("utf-8", "replace")) for part in parts if part.strip()]
    end = time.perf_counter() - began
    if pending.strip():
        lines.append((end, pending.decode("utf-8", "replace")))
    code = proc.wait()
    return {"exit": code, "seconds": round(time.perf_counter() - began, 1), "lines": lines, "end": end}


def silences(run: dict, longer_than: float) -> list[dict[str, Any]]:
    """Every stretch without output longer than ``longer_than`` seconds: from the start to the first line, between
    lines, and from the last line to the exit; with the lines either side."""
    times = [0.0] + [t for t, _ in run["lines"]] + [run["end"]]
    texts = ["(start)"] + [text for _, text in run["lines"]] + ["(exit)"]
    found = []
    for i in range(1, len(times)):
        gap = times[i] - times[i - 1]
        if gap > longer_than:
            found.append({"seconds": round(gap, 1), "at": round(times[i - 1], 1),
                          "after": texts[i - 1][:160], "before": texts[i][:160]})
    return found


def stage_seconds(run: dict) -> dict[str, float]:
    """Seconds from each "Running stage 'X'" line of `dvc repro` to the next one (the last: to the exit)."""
    marks = [(t, m.group(1)) for t, text in run["lines"] if (m := re.search(r"Running stage '([^']+)'", text))]
    ends = [t for t, _ in marks[1:]] + [run["end"]]
    return {name: round(end - t, 1) for (t, name), end in zip(marks, ends)}


def longest(run: dict) -> float:
    return max((gap["seconds"] for gap in silences(run, 0.0)), default=0.0)


def section_large(args, ctx: dict) -> dict:
    rows = int(getattr(args, "large_rows", ROWS))
    work = ctx["work"] / "large"
    work.mkdir(parents=True)
    ws = make_workspace(work / "ws", ctx["tiny"])
    strategy = getattr(args, "large_strategy", STRATEGY)
    if strategy != "replay+ewc":  # make_workspace's
        set_strategy(ws, strategy)
    source = large_csv(work / "large.csv", rows)
    result: dict[str, Any] = {"rows": rows, "strategy": strategy, "target_s": SILENCE_TARGET_S}
    for step, cmd in (("ingest", [BIN / "continual", "ingest", source, "--name", "large"]),
                      ("repro", [BIN / "dvc", "repro"])):
        run = watched(cmd, ws)
        result[step] = {"exit": run["exit"], "seconds": run["seconds"], "lines": len(run["lines"]),
                        "longest_silence_s": longest(run), "silences": silences(run, SILENCE_TARGET_S),
                        "tail": [text for _, text in run["lines"][-5:]] if run["exit"] else [],
                        "log": [(round(t, 1), text[:200]) for t, text in run["lines"]]}
        if step == "repro":
            result[step]["stages"] = stage_seconds(run)
        log(f"large: {step} exit {run['exit']} in {run['seconds']} s, longest silence "
            f"{result[step]['longest_silence_s']} s, {len(result[step]['silences'])} over {SILENCE_TARGET_S:.0f} s")
        if run["exit"]:
            break
    metrics = ws / "rounds" / "0001-large" / "metrics.json"
    if metrics.exists():
        result["phases"] = json.loads(metrics.read_text()).get("phase_seconds", {})
    result["total_s"] = round(sum(result[s]["seconds"] for s in ("ingest", "repro") if s in result), 1)
    result["longest_silence_s"] = max(result[s]["longest_silence_s"] for s in ("ingest", "repro") if s in result)
    return result


def summarise_large(result: dict) -> list[tuple[str, str, str]]:
    over = sum(len(result[step]["silences"]) for step in ("ingest", "repro") if step in result)
    rows = [("large", f"{result['rows']:,} short rows, {result['strategy']}: ingest + dvc repro seconds (exit codes)",
             f"{result['total_s']} s (ingest {result['ingest']['seconds']} s exit {result['ingest']['exit']}, "
             f"repro {result.get('repro', {}).get('seconds', '-')} s exit {result.get('repro', {}).get('exit', '-')})"),
            ("large", f"longest silence (target <= {result['target_s']:.0f} s); silences over target",
             f"{result['longest_silence_s']} s; {over}")]
    if result.get("repro", {}).get("stages"):
        rows.append(("large", "dvc repro seconds per stage",
                     ", ".join(f"{name} {s}" for name, s in result["repro"]["stages"].items())))
    if result.get("phases"):
        rows.append(("large", "round seconds per phase (metrics.json)",
                     ", ".join(f"{name} {s:.0f}" for name, s in result["phases"].items())))
    for step in ("ingest", "repro"):
        for gap in result.get(step, {}).get("silences", [])[:5]:
            rows.append(("large", f"{step}: silent {gap['seconds']} s at {gap['at']} s after",
                         gap["after"][:90]))
    return rows
