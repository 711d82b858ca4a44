"""The wrong folder: the workspace commands (`continual ingest`, `status`, `verify`, `report`) run from every folder
of a workspace must act on the workspace itself, found upwards as git and DVC find their root; `dvc repro` there
reads ./dvc.yaml, so DVC refuses it in a subfolder (counted) and `dvc repro -P` must do the work. Run from a folder
outside any workspace the commands must fail, `continual` with exit 1 and a message, creating nothing. Counted:
commands that failed, arrivals registered anywhere but the workspace's stream, and phantom files (a stream.yaml,
data/, mlflow.db, ... made in a subfolder, or any untracked file git sees)."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from chaos_suite.common import BIN, clean_csv, log, make_workspace, sh, snapshot, stream_keys

# What a command that took its folder for the workspace root would create there.
ROOT_NAMES = {"stream.yaml", "dvc.yaml", "dvc.lock", "params.yaml", "mlflow.db", "mlruns", "mlartifacts",
              ".continual", ".dvc", "data", "rounds", "metrics", "reports", "captures"}
# The stores of git, DVC and MLflow: their top folder is visited, what they hold inside is theirs.
INTERNAL = (".git", ".dvc/cache", ".dvc/tmp", "mlartifacts")
PIPELINE = ("metrics/", "reports/")
NO_PIPELINE_HERE = re.compile(r"dvc\.yaml' (does not exist|is dvc-ignored)")
GIT = ["git", "-c", "user.name=chaos", "-c", "user.email=chaos@localhost", "-c", "commit.gpgsign=false"]


def folders_of(ws: Path) -> list[Path]:
    """The workspace root and every folder under it, except inside git's, DVC's and MLflow's own stores."""
    found = [ws]
    for dirpath, dirnames, _ in os.walk(ws):
        rel = Path(dirpath).relative_to(ws).as_posix()
        if any(rel == inner or rel.startswith(inner + "/") for inner in INTERNAL):
            dirnames[:] = []
            continue
        found += [Path(dirpath) / name for name in sorted(dirnames)]
    return found


def phantoms(ws: Path) -> list[str]:
    """Paths named like a workspace's root files anywhere but at the root (data/ at the root only)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(ws):
        rel = Path(dirpath).relative_to(ws).as_posix()
        if any(rel == inner or rel.startswith(inner + "/") for inner in INTERNAL):
            dirnames[:] = []
            continue
        if rel != ".":
            found += [f"{rel}/{name}" for name in dirnames + filenames if name in ROOT_NAMES]
    untracked = sh(["git", "status", "--porcelain", "--untracked-files=all"], ws).stdout.splitlines()
    # metrics/ and reports/ hold the pipeline's uncached outputs, which git is meant to commit
    return found + [line[3:] for line in untracked if line.startswith("??") and not line[3:].startswith(PIPELINE)]


def _last_line(done) -> str:
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[-1][:200] if lines else ""


def section_folders(args, ctx: dict) -> dict:
    work = ctx["work"] / "folders"
    work.mkdir(parents=True)
    ws = make_workspace(work / "ws", ctx["tiny"])
    sh([BIN / "continual", "ingest", clean_csv(work / "first.csv", "first"), "--name", "first"], ws)
    sh([BIN / "dvc", "repro"], ws, timeout=3600)
    sh([*GIT, "add", "-A"], ws)
    sh([*GIT, "commit", "-qm", "first round"], ws)
    result: dict[str, Any] = {"inside": [], "outside": []}
    folders = folders_of(ws)
    for i, folder in enumerate(folders):
        name = f"from{i:02d}"
        source = clean_csv(work / f"{name}.csv", name)
        before = stream_keys(ws)
        runs = {"ingest": sh([BIN / "continual", "ingest", os.path.relpath(source, folder), "--name", name], folder,
                             check=False)}
        for command in ("status", "verify", "report"):
            runs[command] = sh([BIN / "continual", command], folder, check=False)
        failed = {command: _last_line(done) for command, done in runs.items() if done.returncode}
        plain = sh([BIN / "dvc", "repro"], folder, check=False, timeout=3600)
        # DVC finds its root from any folder, but `dvc repro` with no target reads ./dvc.yaml: in a subfolder it
        # refuses at once (README: use `dvc repro -P` there), and -P must then do the work.
        refused = folder != ws and plain.returncode != 0 and bool(NO_PIPELINE_HERE.search(plain.stderr))
        repro = sh([BIN / "dvc", "repro", "-P"], folder, check=False, timeout=3600) if refused else plain
        # what DVC 3.67 refuses to record a stage from: a folder whose files git ignores (rounds/, .continual/)
        ignored = sh(["git", "check-ignore", "-q", folder / "any-file"], ws, check=False).returncode == 0
        registered = stream_keys(ws)[len(before):]
        trained = (ws / "rounds" / f"{len(before) + 1:04d}-{name}" / "metrics.json").is_file()
        result["inside"].append({"folder": folder.relative_to(ws).as_posix() or ".", "failed": failed,
                                 "registered": registered, "repro_refused": refused, "repro_exit": repro.returncode,
                                 "repro_says": _last_line(repro) if repro.returncode else "", "git_ignored": ignored,
                                 "trained": trained})
        if failed or registered != [f"{len(before) + 1:04d}-{name}"] or repro.returncode:
            log(f"folders: from {folder.relative_to(ws)} (git-ignored: {ignored}): failed {failed}, registered "
                f"{registered}, dvc repro{' -P' if refused else ''} exit {repro.returncode} {_last_line(repro)}")
    final = sh([BIN / "dvc", "repro"], ws, check=False, timeout=3600)  # at the root: the stream must be whole
    result["final"] = {"exit": final.returncode, "restored": final.stdout.count("restored, not retrained"),
                       "trained": sum((ws / "rounds" / key / "metrics.json").is_file() for key in stream_keys(ws)),
                       "rounds": len(stream_keys(ws))}
    result["phantoms"] = phantoms(ws)

    outside = Path(tempfile.mkdtemp(prefix="chaos-outside-"))  # not under the repository: it is a workspace itself
    try:
        here = outside / "data"
        here.mkdir()
        source = clean_csv(outside / "in.csv", "outside")
        before = snapshot(outside)
        for command in (["continual", "ingest", "../in.csv", "--name", "outside"], ["continual", "status"],
                        ["continual", "verify"], ["continual", "report"], ["dvc", "repro"]):
            done = sh([BIN / command[0], *command[1:]], here, check=False)
            says = (done.stderr or done.stdout).strip()
            expected = 1 if command[0] == "continual" else None  # dvc's own exit code for "not a DVC repository"
            ok = (done.returncode == expected if expected else done.returncode != 0) and bool(says)
            result["outside"].append({"command": " ".join(command), "exit": done.returncode, "ok": ok,
                                      "says": says.splitlines()[-1][:200] if says else ""})
        result["outside_created"] = sorted(set(snapshot(outside)) - set(before))
        source.unlink()
    finally:
        shutil.rmtree(outside, ignore_errors=True)

    failures = sum(len(entry["failed"]) for entry in result["inside"])
    repro_failed = [entry for entry in result["inside"] if entry["repro_exit"]]
    log(f"folders: {len(folders)} folders: {failures} continual commands failed, "
        f"{sum(len(e['registered']) != 1 for e in result['inside'])} ingests not in the workspace's stream, "
        f"{len(result['phantoms'])} phantom paths, dvc repro failed in {len(repro_failed)} "
        f"({sum(e['git_ignored'] for e in repro_failed)} of them git-ignored); then at the root: exit "
        f"{result['final']['exit']}, {result['final']['trained']}/{result['final']['rounds']} rounds; outside: "
        f"{sum(not o['ok'] for o in result['outside'])} wrong answers, {len(result['outside_created'])} paths created")
    return result


def summarise_folders(result: dict) -> list[tuple[str, str, str]]:
    inside, final = result["inside"], result["final"]
    failed = sum(len(entry["failed"]) for entry in inside)
    repro_failed = [entry for entry in inside if entry["repro_exit"]]
    ignored = [entry for entry in repro_failed if entry["git_ignored"]]
    rows = [
        ("folders", f"continual ingest, status, verify, report from each of {len(inside)} folders: failed",
         f"{failed} of {4 * len(inside)}"),
        ("folders", "ingests registered in the workspace's own stream (one per folder); phantom paths",
         f"{sum(len(e['registered']) == 1 for e in inside)} of {len(inside)}; {len(result['phantoms'])}"
         + (f": {', '.join(result['phantoms'][:4])}" if result["phantoms"] else "")),
        ("folders", "dvc repro without a target in a subfolder: refused by DVC (it reads ./dvc.yaml)",
         f"{sum(e['repro_refused'] for e in inside)} of {len(inside) - 1}, nothing created"),
        ("folders", "dvc repro -P from a subfolder: failed (of them in a git-ignored folder: DVC 3.67's refusal)",
         f"{len(repro_failed)} of {len(inside) - 1} ({len(ignored)}: {', '.join(e['folder'] for e in ignored[:3])}"
         f"{', ...' if len(ignored) > 3 else ''})"),
        ("folders", "then dvc repro at the root: exit; rounds trained of the stream's; put back, not retrained",
         f"exit {final['exit']}; {final['trained']} of {final['rounds']}; {final['restored']}"),
        ("folders", "outside any workspace: commands answering exit 1 with a message (dvc: its own refusal)",
         f"{sum(o['ok'] for o in result['outside'])} of {len(result['outside'])}; "
         f"{len(result['outside_created'])} paths created"),
    ]
    for entry in inside:
        for command, tail in entry["failed"].items():
            rows.append(("folders", f"from {entry['folder']}: {command} failed", tail[:90]))
    for entry in repro_failed:
        if not entry["git_ignored"]:
            rows.append(("folders", f"from {entry['folder']}: dvc repro failed", entry["repro_says"][:90]))
    return rows
