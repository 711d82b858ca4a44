"""`continual verify`, the first stage of `dvc repro`: data/arrivals/ holds exactly what stream.yaml registers."""
from __future__ import annotations

import sys
from pathlib import Path

from continual.arrivals.journal import ingest_lock, read_journal, recover_interrupted_ingest
from continual.arrivals.parse import ArrivalError
from continual.arrivals.split import SPLITS
from continual.workspace.files import paths_under
from continual.workspace.hashes import dir_hash, dvc_cached
from continual.workspace.layout import Workspace

INGEST_HINT = "`continual ingest FILE --name NAME`"


def verify_arrivals(ws: Workspace) -> None:
    """Raise ArrivalError unless data/arrivals/ holds exactly the arrivals stream.yaml registers, naming the cure
    that fits: `dvc checkout` for data out of step with git (``_out_of_step``), `dvc pull` for data this
    workspace no longer has, `continual ingest` for a file copied in by hand (which would otherwise slip past
    validation, splitting and versioning).
    """
    with ingest_lock(ws):  # an ingest running now (dvc repro runs us) finishes first
        journal = read_journal(ws)  # under the lock, a journal is an ingest that was killed half way
        # Put it right here, unless its .dvc file exists unregistered: the running `dvc repro` has loaded that
        # file as a stage already, and deleting it under dvc would fail the repro. That one waits for the next
        # ingest or `continual repair`; it blocks nothing meanwhile.
        if journal is not None and (journal["key"] in ws.stream() or not ws.arrival_dvc_file(journal["key"]).exists()):
            print(f"continual verify: {recover_interrupted_ingest(ws)}", file=sys.stderr)
            journal = None
        keys = ws.stream()
    expected = {ws.arrivals_dir / ".gitignore"}
    if journal is not None:  # not copied in by hand: the next ingest or `continual repair` rolls it back
        half = journal["key"]
        print(f"continual verify: an ingest of {half} was killed half way; the next `continual ingest` or "
              "`continual repair` rolls it back", file=sys.stderr)
        expected |= {ws.arrival_dir(half), ws.arrival_dvc_file(half), *paths_under(ws.arrival_dir(half))}
    for key in keys:
        expected |= {ws.arrival_dir(key), ws.arrival_dvc_file(key), ws.arrival_record_file(key)}
        expected |= {ws.arrival_split_file(key, split) for split in SPLITS}
    # Look one level into registered folders too: a file dropped into one would change a round's input.
    folders = [ws.arrivals_dir] + [ws.arrival_dir(key) for key in keys if ws.arrival_dir(key).is_dir()]
    present = [p for folder in folders if folder.is_dir() for p in folder.iterdir()]
    strays = sorted(p for p in present if p not in expected)
    missing = {key: absent for key in keys if (absent := [f.name for f in _arrival_files(ws, key) if not f.is_file()])}

    problems, strays, missing = _out_of_step(ws, keys, strays, missing)
    if strays:
        problems.append(
            f"{', '.join(str(p.relative_to(ws.root)) for p in strays)}: not registered in stream.yaml. Arrivals enter "
            f"only through {INGEST_HINT}, which validates, splits and versions them: move the file out of "
            "data/arrivals/ and ingest it."
        )
    if missing:
        problems.append(
            f"registered in stream.yaml but missing from data/arrivals/: {_missing_names(ws, missing)}, and not in "
            "this workspace's DVC cache either: `dvc pull` fetches them from the DVC remote they were pushed to "
            "(`dvc push` where they were ingested), then `dvc checkout`. New data goes in with "
            f"{INGEST_HINT}."
        )
    if problems:
        raise ArrivalError("\n".join(problems))


def _arrival_files(ws: Workspace, key: str) -> list[Path]:
    return [*(ws.arrival_split_file(key, split) for split in SPLITS), ws.arrival_record_file(key)]


def _missing_names(ws: Workspace, missing: dict[str, list[str]]) -> str:
    return ", ".join(f"{key} (without {', '.join(absent)})" if ws.arrival_dir(key).is_dir() else key
                     for key, absent in missing.items())


def _out_of_step(ws: Workspace, keys: list[str], strays: list[Path], missing: dict[str, list[str]]
                 ) -> tuple[list[str], list[Path], dict[str, list[str]]]:
    """Tell data/arrivals/ out of step with git from data that is really foreign or lost.

    After `git checkout` of another commit without `dvc checkout`, stream.yaml and the .dvc files are the
    commit's, the folders are still the old ones: an arrival of a later commit is left unregistered, one of
    this commit is absent. Such a folder is data DVC stored (its content hash is in the DVC cache), and the
    cure is `dvc checkout`, never ingesting it again. Returns (the problem that explains, the strays and the
    missing arrivals it does not explain); a registered arrival edited by hand is allowed (rounds train on it
    as it is, DVC tracks its hash), with a note."""
    folders = {p: dir_hash(p) for p in strays if p.is_dir() and p.parent == ws.arrivals_dir}
    recorded = {key: ws.recorded_arrival_hash(key) for key in keys}
    changed = {key: ws.arrival_hash(key) for key in keys if key not in missing}
    changed = {key: found for key, found in changed.items() if recorded[key] and found != recorded[key]}
    if not (folders or changed or missing):
        return [], strays, missing
    cached = dvc_cached(ws.root, [*folders.values(), *changed.values(), *(recorded[key] for key in missing)])
    stored = [p for p, found in folders.items() if found in cached]
    other_version = [key for key, found in changed.items() if found in cached]
    restorable = {key: absent for key, absent in missing.items() if recorded[key] in cached}
    edited = [key for key, found in changed.items() if found not in cached]
    inside = {p.parent.name for p in strays if p.parent != ws.arrivals_dir}  # a stray file says why it changed
    if [key for key in edited if key not in inside]:
        print(f"continual verify: {', '.join(k for k in edited if k not in inside)}: not what the .dvc file "
              "records (edited since it was ingested): rounds train on it as it is now; `dvc checkout` puts the "
              "ingested version back", file=sys.stderr)
    parts = []
    if stored:
        parts.append(f"{', '.join(str(p.relative_to(ws.root)) for p in stored)}: data DVC stored (the DVC cache "
                     "holds it), but not registered in this commit's stream.yaml")
    if other_version:
        parts.append(f"{', '.join(other_version)}: another version of the arrival than its .dvc file records, "
                     "one DVC stored")
    if restorable:
        parts.append(f"registered in stream.yaml but missing from data/arrivals/: {_missing_names(ws, restorable)}, "
                     "of which the DVC cache holds a copy")
    problems = [] if not parts else [
        "data/arrivals/ is out of step with git: " + "; ".join(parts) + ". This is what a `git checkout` (or pull, "
        "merge, reset) leaves until `dvc checkout` brings the data along: run `dvc checkout`, which puts "
        "data/arrivals/ and rounds/ in line with the commit. Nothing needs ingesting again."]
    return (problems, [p for p in strays if p not in stored],
            {key: absent for key, absent in missing.items() if key not in restorable})
