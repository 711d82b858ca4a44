"""Hostile arrivals: every fixture of tests/fixtures/hostile refused whole, or accepted and trained on; the 50 MB
file."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from chaos_suite.common import BIN, ENV, HOSTILE, clean_csv, load_make, log, make_workspace, sh, snapshot, stream_keys


def section_hostile(args, ctx: dict) -> dict:
    make = load_make()
    cases = make.load_manifest()
    work = ctx["work"] / "hostile"
    runtime = work / "runtime"
    work.mkdir(parents=True)
    ws = make_workspace(work / "refusals", ctx["tiny"])
    refused = [case for case in cases if case["expect"] == "refuse"]
    failures = []
    started = time.perf_counter()
    for case in refused:
        path = make.runtime_fixture(case, runtime) if case.get("runtime") else HOSTILE / case["file"]
        before = snapshot(ws)
        done = sh([BIN / "continual", "-C", ws, "ingest", path, f"--name={case['name']}"], ws, check=False)
        err = done.stderr
        problems = []
        if done.returncode != 1:
            problems.append(f"exit {done.returncode}")
        if str(path) not in err:
            problems.append("message does not name the file")
        if case["line"] is not None and f": line {case['line']}: " not in err:
            problems.append(f"message does not name line {case['line']}")
        if case["message"] not in err or "Traceback" in err:
            problems.append(f"unexpected message {err.strip()[:200]!r}")
        if snapshot(ws) != before:
            problems.append("the workspace changed")
        if problems:
            failures.append({"file": case["file"], "name": case["name"], "problems": problems})
    log(f"hostile: {len(refused) - len(failures)}/{len(refused)} refusals as expected "
        f"({time.perf_counter() - started:.0f} s)")

    big = next(case for case in cases if case["file"] == "big-50mb.csv")
    big_result = big_file(make, big, work, ctx["tiny"])
    result = {"refused": len(refused), "refusal_failures": failures, "big": big_result,
              "files": len({case["file"] for case in cases}), "cases": len(cases),
              "accepted": sum(case["expect"] == "accept" for case in cases)}
    if "kill" not in ctx["sections"]:  # otherwise the kill stream is made of the accepted fixtures
        result["chain"] = accepted_chain(make, cases, work, ctx["tiny"])
    return result


# Forked from a small parent: Linux carries the forking process's RSS high-water mark into the child's
# ru_maxrss across exec, so forking the command from this process (torch loaded) would report ~900 MB for
# anything. The wrapper is a fresh small python; what it forks starts from its few MB.
_PEAK_RSS = ("import os, subprocess, sys\n"
             "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
             "_, status, usage = os.wait4(p.pid, 0)\n"
             "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)\n")


def peak_rss_run(cmd: list, cwd: Path) -> tuple[int, float, int, str]:
    """(exit code, seconds, peak RSS in bytes of the process and the children it waited for, stderr)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _PEAK_RSS, *map(str, cmd)], cwd=cwd, env=ENV, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - started
    code, maxrss = done.stdout.split()[-2:]
    return int(code), seconds, int(maxrss) * 1024, done.stderr


def big_file(make, case: dict, work: Path, tiny: Path) -> dict:
    ws = make_workspace(work / "big", tiny)
    path = make.runtime_fixture(case, work / "runtime")
    size = path.stat().st_size
    code, seconds, rss, err = peak_rss_run([BIN / "continual", "ingest", path, "--name", case["name"]], ws)
    result = {"bytes": size, "ingest_exit": code, "ingest_seconds": round(seconds, 1),
              "peak_rss_mb": round(rss / 2**20, 1), "error": err.strip()[-300:] if code else ""}
    log(f"hostile: 50 MB ingest exit {code} in {seconds:.1f} s, peak RSS {rss / 2**20:.0f} MB")
    if code == 0:
        for salt in ("after-big-1", "after-big-2"):
            sh([BIN / "continual", "ingest", clean_csv(work / f"{salt}.csv", salt), "--name", salt], ws)
        started = time.perf_counter()
        repro = sh([BIN / "dvc", "repro"], ws, check=False, timeout=3600)
        result["repro_exit"] = repro.returncode
        result["repro_seconds"] = round(time.perf_counter() - started, 1)
        result["rounds"] = sum((ws / "rounds" / key / "metrics.json").exists() for key in stream_keys(ws))
        log(f"hostile: 50 MB arrival + 2 clean: dvc repro exit {repro.returncode}, {result['rounds']} rounds "
            f"in {result['repro_seconds']} s")
    shutil.rmtree(ws / ".dvc" / "cache", ignore_errors=True)  # 100+ MB of copies
    return result


def accepted_chain(make, cases: list[dict], work: Path, tiny: Path) -> dict:
    """Every accepted fixture, then two clean arrivals, trained by one `dvc repro`."""
    ws = make_workspace(work / "chain", tiny)
    names = []
    for case in cases:
        if case["expect"] != "accept" or case["file"] == "big-50mb.csv":
            continue
        path = make.runtime_fixture(case, work / "runtime") if case.get("runtime") else HOSTILE / case["file"]
        sh([BIN / "continual", "ingest", path, f"--name={case['name']}"], ws)
        names.append(case["name"])
    for salt in ("clean-1", "clean-2"):
        sh([BIN / "continual", "ingest", clean_csv(work / f"{salt}.csv", salt), "--name", salt], ws)
    repro = sh([BIN / "dvc", "repro"], ws, check=False, timeout=7200)
    keys = stream_keys(ws)
    done = [key for key in keys if (ws / "rounds" / key / "metrics.json").exists()]
    followed = sum(1 for i, key in enumerate(keys[:-2]) if set(keys[i:i + 3]) <= set(done))
    log(f"hostile chain: dvc repro exit {repro.returncode}, {len(done)}/{len(keys)} rounds; "
        f"{followed}/{len(names)} accepted files followed by two successful rounds")
    return {"accepted": len(names), "followed_by_two_rounds": followed, "repro_exit": repro.returncode}


def summarise_hostile(result: dict) -> list[tuple[str, str, str]]:
    big = result["big"]
    rows = [
        ("hostile", "fixture files / cases", f"{result['files']} / {result['cases']}"),
        ("hostile", "refused with file (+line) named, workspace byte-identical",
         f"{result['refused'] - len(result['refusal_failures'])}/{result['refused']}"),
        ("hostile", "50 MB ingest: exit, seconds, peak RSS",
         f"{big['ingest_exit']}, {big['ingest_seconds']} s, {big['peak_rss_mb']} MB"),
        ("hostile", "50 MB arrival + 2 clean: rounds trained", f"{big.get('rounds', 0)}/3"),
    ]
    if "chain" in result:
        chain = result["chain"]
        rows.append(("hostile", "accepted, followed by two successful rounds",
                     f"{chain['followed_by_two_rounds']}/{chain['accepted']}"))
    else:
        rows.append(("hostile", "accepted, followed by two successful rounds", "in the kill stream (below)"))
    return rows
