"""A labelled text file becomes a registered arrival: validated, de-duplicated, split, tracked by DVC.

Every check runs on the file in memory before anything is written, so a rejected file leaves the workspace
exactly as it was. Once writing starts, a failure undoes what was written (`_Undo`), and a journal
(.continual/ingest-journal.json) records what the undo needs: an ingest killed half way (SIGKILL, power loss:
no undo runs) is rolled back, or finished if it had already registered the arrival, by the next ingest or by
`continual repair` (``recover_interrupted_ingest``), or by `continual verify`, the first stage of `dvc repro`
(which lets it be only when its .dvc file exists unregistered: see ``verify_arrivals``).
"""
from __future__ import annotations

import base64
import codecs
import csv
import dataclasses
import fcntl
import hashlib
import io
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from continual import progress
from continual.arrivals.jsonl import JsonlError, encode_jsonl, parse_lines, read_jsonl, write_atomic
from continual.workspace.layout import ARRIVAL_NAME, INGEST_JOURNAL, Workspace, dir_hash, dvc_cached

SPLITS = ("train", "test")
JSONL_SUFFIXES = {".jsonl", ".json-lines", ".ndjson"}
EXAMPLES_SHOWN = 3
QUOTED_MAX = 80  # characters of the file quoted in a message
# Not whitespace to str.strip(), yet nothing to read: a text of only these is empty.
INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff]")
# Drawn as nothing, besides whitespace and the format (Cf: zero-width spaces and joiners, BOM, bidi marks, soft
# hyphen, tags) and control characters: Hangul fillers, the braille blank, the grapheme joiner, Khmer inherent
# vowels, variation selectors.
_BLANKS = re.compile("[\u115f\u1160\u3164\uffa0\u2800\u034f\u17b4\u17b5\ufe00-\ufe0f\U000e0100-\U000e01ef]")
MAX_LABEL_CHARS = 100  # ingest.max_label_chars when params.yaml has none
# A sure lower bound on tokens for word-piece and BPE tokenizers: none merges across a word and a
# punctuation mark; +2 for [CLS]/[SEP] or their like.
_PIECES = re.compile(r"\w+|[^\w\s]")
INGEST_HINT = "`continual ingest FILE --name NAME`"


class ArrivalError(ValueError):
    """A file that cannot become an arrival, or a data/arrivals/ folder out of step with stream.yaml."""


@dataclass
class Row:
    id: str
    text: str
    label: str
    line: int  # where the row starts in the source file, for messages

    def as_json(self) -> str:
        return json.dumps({"id": self.id, "text": self.text, "label": self.label}, ensure_ascii=False)


@dataclass
class Duplicates:
    policy: str
    seen_before: int = 0  # texts already in an earlier arrival (train or test)
    within_file: int = 0  # repeats of an earlier row of the same file
    conflicting_labels: int = 0  # within-file repeats whose label differs from the first occurrence
    dropped: int = 0
    examples: list[str] = field(default_factory=list)


@dataclass
class Relabels:
    """Texts of earlier arrivals that come back with another label than their latest one: corrections.
    ``keep`` (ingest.relabels): a train row of this arrival with the new label, never a test row (an earlier
    arrival holds the text); the earlier arrival keeps its old label. ``drop``: the earlier label stands."""
    policy: str
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.policy == "keep":
            rule = ("kept as train rows of this arrival with the new label (ingest.relabels=keep): rounds learn "
                    "the correction from now on; the earlier arrival keeps its old label; none is a test row")
        else:
            rule = "DROPPED (ingest.relabels=drop): the earlier label stands; set ingest.relabels: keep to correct it"
        return f"{self.count} texts of earlier arrivals came back with another label: {rule}"


@dataclass
class IngestReport:
    key: str
    source: str
    rows: int  # rows read from the file, before duplicates were dropped
    train: int
    test: int
    label_counts: dict[str, dict[str, int]]  # split -> label -> count
    duplicates: Duplicates
    new_labels: list[str]  # labels no earlier arrival had
    warnings: list[str] = field(default_factory=list)  # kept, but likely not what was meant
    relabels: Relabels = field(default_factory=lambda: Relabels(policy="keep"))

    def summary(self) -> str:
        labels = sorted(set(self.label_counts["train"]) | set(self.label_counts["test"]))
        per_label = ", ".join(
            f"{lab} {self.label_counts['train'].get(lab, 0)}/{self.label_counts['test'].get(lab, 0)}" for lab in labels
        )
        d = self.duplicates
        lines = [
            f"Registered {self.key} from {self.source}: {self.rows} rows -> {self.train} train, {self.test} test",
            f"  labels (train/test): {per_label}",
            f"  duplicates: {d.seen_before} seen in earlier arrivals, {d.within_file} repeated within the file"
            f" ({d.conflicting_labels} with a different label); {d.dropped} dropped (ingest.duplicates={d.policy})",
            *(f"    {example}" for example in d.examples),
        ]
        if self.relabels.count:
            lines.append(f"  relabels: {self.relabels.summary()}")
            lines += [f"    {example}" for example in self.relabels.examples]
        if self.new_labels:
            lines.append(f"  new labels: {', '.join(self.new_labels)}")
        lines += [f"  warning: {warning}" for warning in self.warnings]
        return "\n".join(lines)


# -- public API ----------------------------------------------------------------------------------


def ingest_file(ws: Workspace, source: Path, name: str, params: dict[str, Any]) -> IngestReport:
    """Validate ``source`` and register it as the next arrival ``<NNNN>-<name>`` (raises ArrivalError).

    Ingests into one workspace run one at a time: a second waits for the first to finish, then sees its
    arrival (its key, its texts for de-duplication). An earlier ingest that was killed half way is rolled
    back (or finished) first, and said so on stderr."""
    with _one_ingest_at_a_time(ws):
        note = recover_interrupted_ingest(ws)
        if note:
            print(f"continual ingest: {note}", file=sys.stderr)
        return _ingest(ws, Path(source), name, params)


@contextmanager
def _one_ingest_at_a_time(ws: Workspace, wait: bool = True) -> Iterator[bool]:
    """An advisory lock on the workspace folder itself: no lock file, so a rejected arrival still leaves
    the workspace byte for byte as it was. Released when the process ends, however it ends. Yields False
    (without the lock) if ``wait`` is off and another ingest holds it."""
    fd = os.open(ws.root, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def interrupted_ingest(ws: Workspace) -> dict | None:
    """The journal of an ingest that was killed half way, if any (None while an ingest is running)."""
    if not (ws.root / INGEST_JOURNAL).exists():
        return None
    with _one_ingest_at_a_time(ws, wait=False) as free:
        return _read_journal(ws) if free else None  # held: the journal belongs to the ingest running now


def recover_after_crash(ws: Workspace) -> str | None:
    """`continual repair`'s part: ``recover_interrupted_ingest`` once no ingest runs."""
    with _one_ingest_at_a_time(ws):
        return recover_interrupted_ingest(ws)


def recover_interrupted_ingest(ws: Workspace) -> str | None:
    """Roll back what an ingest killed half way wrote, or finish it if it had already registered the arrival
    in stream.yaml (only `git add` was left). The caller holds the ingest lock. Returns what was done."""
    for stray in (ws.root / INGEST_JOURNAL).parent.glob(f".{Path(INGEST_JOURNAL).name}.*.tmp"):
        stray.unlink(missing_ok=True)  # a journal whose own atomic write was cut short: nothing began
    journal = _read_journal(ws)
    if journal is None:
        return None
    key = journal["key"]
    if key in ws.stream():  # the commit point had passed: stage the files, as the ingest would have
        _unblock_git_index(ws, journal)
        tracked = [ws.arrival_dvc_file(key), ws.arrivals_dir / ".gitignore", ws.stream_file]
        _run(["git", "add", "--", *(str(p.relative_to(ws.root)) for p in tracked if p.exists())], ws.root)
        done = f"finished registering {key}: the ingest that registered it was killed before `git add`"
    else:
        _Undo.from_journal(ws, journal)()
        done = (f"rolled back {key}: its ingest (of {journal.get('source', '?')}) was killed half way; "
                "nothing of it is left, ingest the file again")
    for stray in [*ws.root.glob(".stream.yaml.*.tmp"), *ws.arrivals_dir.glob("..gitignore.*.tmp")]:
        stray.unlink(missing_ok=True)  # write_atomic's temporary files, cut short by the kill
    (ws.root / INGEST_JOURNAL).unlink(missing_ok=True)
    return done


def _read_journal(ws: Workspace) -> dict | None:
    path = ws.root / INGEST_JOURNAL
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as e:  # written atomically, so never half written; but say so rather than guess
        raise ArrivalError(f"{path}: not a journal continual wrote ({e}); move it away") from None


def _unblock_git_index(ws: Workspace, journal: dict) -> None:
    """git leaves .git/index.lock behind when it is killed, and every later `git add` then fails. Remove it
    only if the killed ingest can have made it (newer than the journal) and no git process runs here."""
    lock = ws.root / ".git" / "index.lock"
    try:
        made = lock.stat().st_mtime
    except FileNotFoundError:
        return
    if made < journal.get("started", float("inf")) or _git_running_in(ws.root):
        return
    lock.unlink(missing_ok=True)


def _git_running_in(root: Path) -> bool:
    import psutil  # a dependency of dvc

    for process in psutil.process_iter(["name", "cwd"]):
        try:
            if process.info["name"] == "git" and process.info["cwd"] and Path(process.info["cwd"]) == root:
                return True
        except psutil.Error:
            continue
    return False


def _ingest(ws: Workspace, source: Path, name: str, params: dict[str, Any]) -> IngestReport:
    cfg = params["ingest"]
    _check_params(cfg)
    old_keys = ws.stream()
    _check_name(ws, source, name, old_keys)
    key = ws.next_key(name)

    data = _read_source(source)
    rows = _parse(source, data, name, int(cfg["max_text_bytes"]), cfg.get("max_label_chars", MAX_LABEL_CHARS))
    earlier_texts, earlier_labels = _earlier_arrivals(ws, old_keys)
    kept, corrected, duplicates, relabels = _dedupe(rows, earlier_texts, cfg["duplicates"], cfg.get("relabels", "keep"))
    if not kept and corrected:
        raise _error(source, None, f"all {len(corrected)} rows kept are relabelled texts of earlier arrivals: an "
                     "arrival needs new texts too, for its test split (relabels are train rows only)")
    _check_label_counts(source, kept, cfg["min_per_label"], duplicates.dropped)
    train, test = stratified_split(kept, cfg["test_fraction"], random.Random(f"{params['seed']}:{key}"))
    train = sorted(train + corrected, key=lambda r: r.id)
    warnings = _warnings(train + test, earlier_labels, int(params["model"]["max_length"]))
    if relabels.count and relabels.policy == "drop":
        warnings.append(relabels.summary())

    label_counts = {
        split: dict(sorted(Counter(r.label for r in part).items())) for split, part in zip(SPLITS, (train, test))
    }
    record = {
        "key": key,
        "name": name,
        "index": len(old_keys) + 1,
        "source": source.name,
        "source_sha256": hashlib.sha256(data).hexdigest(),
        "rows": {"read": len(rows), "kept": len(kept), "train": len(train), "test": len(test)},
        "labels": label_counts,
        "duplicates": dataclasses.asdict(duplicates),
        "relabels": dataclasses.asdict(relabels),
        "seed": params["seed"],
        "test_fraction": cfg["test_fraction"],
        "warnings": warnings,
    }
    # Encoded before anything is written: an encoding failure must not leave half an arrival.
    files = {
        ws.arrival_split_file(key, "train"): encode_jsonl(_plain(r) for r in train),
        ws.arrival_split_file(key, "test"): encode_jsonl(_plain(r) for r in test),
        ws.arrival_record_file(key): (json.dumps(record, indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
    }
    _register(ws, key, files, old_keys, source)
    return IngestReport(
        key=key,
        source=source.name,
        rows=len(rows),
        train=len(train),
        test=len(test),
        label_counts=label_counts,
        duplicates=duplicates,
        new_labels=sorted({r.label for r in train + test} - earlier_labels),
        warnings=warnings,
        relabels=relabels,
    )


def verify_arrivals(ws: Workspace) -> None:
    """Raise ArrivalError unless data/arrivals/ holds exactly the arrivals stream.yaml registers, naming the cure
    that fits: `dvc checkout` for data out of step with git (``_out_of_step``), `dvc pull` for data this
    workspace no longer has, `continual ingest` for a file copied in by hand (which would otherwise slip past
    validation, splitting and versioning).
    """
    with _one_ingest_at_a_time(ws):  # an ingest running now (dvc repro runs us) finishes first
        journal = _read_journal(ws)  # under the lock, a journal is an ingest that was killed half way
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
        expected |= {ws.arrival_dir(half), ws.arrival_dvc_file(half), *_tree(ws.arrival_dir(half))}
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
    cached = dvc_cached(ws, [*folders.values(), *changed.values(), *(recorded[key] for key in missing)])
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


def read_split(ws: Workspace, key: str, split: str) -> list[dict[str, str]]:
    """The rows (id, text, label) of one split of a registered arrival."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    return read_jsonl(ws.arrival_split_file(key, split))


# -- validation ----------------------------------------------------------------------------------


def _error(source: Path, line: int | None, problem: str) -> ArrivalError:
    return ArrivalError(f"{source}: line {line}: {problem}" if line else f"{source}: {problem}")


def _quoted(text: str) -> str:
    return repr(text if len(text) <= QUOTED_MAX else text[:QUOTED_MAX] + "...")


def _check_params(cfg: dict[str, Any]) -> None:
    if not isinstance(cfg.get("max_text_bytes"), int) or cfg["max_text_bytes"] < 1:
        raise ValueError(f"params: ingest.max_text_bytes must be a positive integer, not {cfg.get('max_text_bytes')!r}")
    if cfg["duplicates"] not in ("drop", "keep"):
        raise ValueError(f"params: ingest.duplicates must be drop or keep, not {cfg['duplicates']!r}")
    max_label = cfg.get("max_label_chars", MAX_LABEL_CHARS)
    if isinstance(max_label, bool) or not isinstance(max_label, int) or max_label < 1:
        raise ValueError(f"params: ingest.max_label_chars must be a positive integer, not {max_label!r}")
    if cfg.get("relabels", "keep") not in ("drop", "keep"):
        raise ValueError(f"params: ingest.relabels must be keep or drop, not {cfg['relabels']!r}")
    if not 0 < cfg["test_fraction"] < 1:
        raise ValueError(f"params: ingest.test_fraction must be between 0 and 1, not {cfg['test_fraction']!r}")


def _check_name(ws: Workspace, source: Path, name: str, old_keys: list[str]) -> None:
    if not ARRIVAL_NAME.fullmatch(name):
        raise _error(
            source, None, f"arrival name {_quoted(name)} is not allowed: use 1-63 lowercase ASCII letters, digits, "
            "'-' or '_', starting with a letter or digit (the name becomes a folder name)"
        )
    used = [key for key in old_keys if ws.arrival_name(key) == name]
    if used:
        raise _error(source, None, f"arrival name {name!r} is already used by {used[0]}; choose another --name")
    key = ws.next_key(name)
    for path in (ws.arrival_dir(key), ws.arrival_dvc_file(key)):
        if path.exists():
            where = path.relative_to(ws.root)
            raise _error(source, None, f"{where} already exists but is not registered in stream.yaml; move it away")


def _read_source(source: Path) -> bytes:
    if not source.exists():
        raise _error(source, None, "no such file")
    if not source.is_file():  # a folder, /dev/null, a pipe: reading it would fail, block or mean nothing
        what = "a folder" if source.is_dir() else "a device, pipe or socket"
        raise _error(source, None, f"not a regular file ({what})")
    try:
        return source.read_bytes()
    except OSError as e:
        raise _error(source, None, f"cannot read it: {e.strerror}") from None


def _line_at(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _decode(source: Path, data: bytes) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise _error(source, None, "the file is UTF-16; save it as UTF-8")
    nul = data.find(b"\0")
    if nul >= 0:
        raise _error(source, _line_at(data, nul), f"binary file (NUL byte at byte offset {nul}), not UTF-8 text")
    body = data.removeprefix(codecs.BOM_UTF8)  # spreadsheet exports often start with a BOM
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        offset = e.start + len(data) - len(body)
        raise _error(source, _line_at(data, offset), f"not UTF-8 (byte 0x{data[offset]:02x} at byte offset {offset})")
    return text


def _csv_records(source: Path, text: str) -> Iterator[tuple[int, dict[str, str]]]:
    # No field is longer than the file: the csv module's own cap (128 KiB) must not preempt max_text_bytes.
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    # strict=True: an unclosed quote is an error, not a field that silently swallows the rest of the file.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    start = 1
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            problem = "a quoted field is never closed" if "unexpected end of data" in str(e) else str(e)
            raise _error(source, start, f"not valid CSV: {problem}") from None
        line, start = start, reader.line_num + 1
        if not any(cell.strip() for cell in record):
            continue  # blank line
        if header is None:
            header = [cell.strip() for cell in record]
            for column in ("text", "label"):
                if column not in header:
                    shown = _quoted(", ".join(header))
                    raise _error(source, line, f"missing `{column}` column (the header has: {shown})")
            repeated = sorted({c for c in header if header.count(c) > 1})
            if repeated:  # which `text` would be the text? Refuse rather than pick one
                raise _error(source, line, f"the header names a column twice: {', '.join(map(_quoted, repeated))}")
            continue
        if len(record) != len(header):
            raise _error(source, line, f"{len(record)} fields, but the header has {len(header)}")
        yield line, dict(zip(header, record))


def _jsonl_records(source: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    records = parse_lines(text, source)
    while True:
        try:
            line, obj = next(records)
        except StopIteration:
            return
        except JsonlError as e:
            raise _error(source, e.line, e.problem) from None
        if not isinstance(obj, dict):
            raise _error(source, line, f"expected a JSON object with `text` and `label`, got {type(obj).__name__}")
        for column in ("text", "label"):
            if column not in obj:
                raise _error(source, line, f"missing `{column}` field")
        yield line, obj


def _blank(text: str) -> bool:
    """Nothing a reader would see: empty, or only whitespace and characters drawn as nothing."""
    return all(c.isspace() or unicodedata.category(c) in ("Cf", "Cc") for c in _BLANKS.sub("", text))


def _row(source: Path, line: int, record: dict[str, Any], name: str, max_bytes: int,
         max_label: int = MAX_LABEL_CHARS) -> Row:
    text, label, id_ = record["text"], record["label"], record.get("id")
    if not isinstance(text, str):
        raise _error(source, line, "`text` must be a string")
    if label is None:
        label = ""
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        raise _error(source, line, "`label` must be a string or an integer")
    # Windows line ends inside a text (CSV quoted fields, JSON "\r\n") become "\n": the same text, one spelling.
    text, label = text.replace("\r\n", "\n").replace("\r", "\n").strip(), str(label).strip()
    if not text:
        raise _error(source, line, "empty text")
    if _blank(text):
        raise _error(source, line, "empty text (only invisible characters such as zero-width spaces)")
    size = len(text.encode("utf-8"))
    if size > max_bytes:  # long texts are kept (the model reads their start); only absurd ones are refused
        raise _error(source, line, f"text is {size} bytes long; ingest.max_text_bytes is {max_bytes}")
    if not label:
        raise _error(source, line, "empty label")
    if _blank(label):
        raise _error(source, line, f"empty label {_quoted(label)}: only invisible characters such as zero-width "
                     "spaces")
    # One spelling per label: "café" typed (NFC) and "café" from a macOS export (NFD) look the same and are one class.
    label = unicodedata.normalize("NFC", label)
    if len(label) > max_label:
        raise _error(source, line, f"label is {len(label)} characters long ({_quoted(label)}); ingest.max_label_chars "
                     f"is {max_label}: a label names a class")
    id_ = "" if id_ is None else str(id_).strip()
    return Row(id=id_ or f"{name}-{line}", text=text, label=label, line=line)


def _parse(source: Path, data: bytes, name: str, max_bytes: int, max_label: int = MAX_LABEL_CHARS) -> list[Row]:
    text = _decode(source, data)
    if not text.strip():
        raise _error(source, None, "the file is empty")
    suffix = source.suffix.lower()
    if suffix not in JSONL_SUFFIXES | {".csv"} and text.lstrip().startswith("["):
        raise _error(source, None, "a JSON array: ingest reads JSON Lines (one object a line) or CSV")
    is_jsonl = suffix in JSONL_SUFFIXES or (suffix != ".csv" and text.lstrip().startswith("{"))
    records = _jsonl_records(source, text) if is_jsonl else _csv_records(source, text)
    rows: list[Row] = []
    first_line: dict[str, int] = {}
    for line, record in progress.bar(records, desc=f"read {source.name}"):
        row = _row(source, line, record, name, max_bytes, max_label)
        if row.id in first_line:
            raise _error(source, line, f"duplicate id {row.id!r} (first on line {first_line[row.id]})")
        first_line[row.id] = line
        rows.append(row)
    if not rows:
        raise _error(source, None, "no rows (the file has only a header or blank lines)")
    return rows


def _plain(row: Row) -> dict[str, str]:
    return {"id": row.id, "text": row.text, "label": row.label}


def _warnings(rows: list[Row], earlier_labels: set[str], max_length: int) -> list[str]:
    """What is kept but likely not meant: near-identical labels, texts the model reads only the start of."""
    warnings = []
    spellings: dict[str, set[str]] = defaultdict(set)
    for label in {r.label for r in rows} | earlier_labels:
        spellings[unicodedata.normalize("NFC", INVISIBLE.sub("", label)).casefold()].add(label)
    ours = {r.label for r in rows}
    for group in sorted(sorted(g) for g in spellings.values() if len(g) > 1 and g & ours):
        warnings.append(f"labels that differ only in case or invisible characters: {', '.join(map(_quoted, group))}"
                        " (they are different classes)")
    long = sum(len(_PIECES.findall(r.text)) + 2 > max_length for r in rows)
    if long:
        texts = "1 text is" if long == 1 else f"{long} texts are"
        warnings.append(f"{texts} longer than model.max_length ({max_length} tokens): the model reads only the start")
    return warnings


def _normalised(text: str) -> str:
    """What counts as the same text: case and whitespace runs do not matter."""
    return " ".join(text.split()).casefold()


def _earlier_arrivals(ws: Workspace, keys: list[str]) -> tuple[dict[str, tuple[str, str]], set[str]]:
    """(normalised text -> (its latest label, the arrival that gave it), every label) of the arrivals ``keys``."""
    texts: dict[str, tuple[str, str]] = {}
    labels: set[str] = set()
    for key in keys:
        if not ws.arrival_dir(key).is_dir():
            raise ArrivalError(f"arrival {key} is missing from data/arrivals/: run `dvc checkout` or `dvc pull`")
        for split in SPLITS:
            for row in read_split(ws, key, split):
                texts[_normalised(row["text"])] = (row["label"], key)  # a later arrival's label is the latest
                labels.add(row["label"])
    return texts, labels


def _dedupe(rows: list[Row], earlier: dict[str, tuple[str, str]], policy: str,
            relabel_policy: str) -> tuple[list[Row], list[Row], Duplicates, Relabels]:
    """(rows to split, relabelled rows for train only, duplicates, relabels)."""
    dups, relabels = Duplicates(policy=policy), Relabels(policy=relabel_policy)
    first: dict[str, Row] = {}
    kept: list[Row] = []
    corrected: list[Row] = []
    for row in rows:
        norm = _normalised(row.text)
        if norm in first:  # checked first: a relabel repeated within the file is a repeat, not a second relabel
            dups.within_file += 1
            original = first[norm]
            note = f"line {row.line} repeats line {original.line}"
            if original.label != row.label:
                dups.conflicting_labels += 1
                note += f" with label {row.label!r} instead of {original.label!r}"
        elif norm in earlier and earlier[norm][0] != row.label:
            relabels.count += 1
            old, key = earlier[norm]
            if len(relabels.examples) < EXAMPLES_SHOWN:
                relabels.examples.append(f"line {row.line}: {row.text[:60]!r} was {old!r} in {key}, now {row.label!r}")
            if relabel_policy == "keep":
                first[norm] = row
                corrected.append(row)
            continue
        elif norm in earlier:
            dups.seen_before += 1
            note = f"line {row.line} is already in an earlier arrival: {row.text[:60]!r}"
        else:
            first[norm] = row
            kept.append(row)
            continue
        if len(dups.examples) < EXAMPLES_SHOWN:
            dups.examples.append(note)
        if policy == "drop":
            dups.dropped += 1
        else:
            kept.append(row)
    return kept, corrected, dups, relabels


def _check_label_counts(source: Path, rows: list[Row], min_per_label: int, dropped: int) -> None:
    # A label needs one train and one test example whatever min_per_label says.
    need = max(2, min_per_label)
    after = f" after dropping {dropped} duplicates" if dropped else ""
    if not rows:
        raise _error(source, None, f"no rows left{after}")
    short = {label: n for label, n in sorted(Counter(r.label for r in rows).items()) if n < need}
    if short:
        counts = ", ".join(f"label {label!r} has {n}" for label, n in short.items())
        raise _error(
            source, None, f"too few examples to split{after}: {counts}; every label needs at least {need} "
            f"(ingest.min_per_label is {min_per_label})"
        )


def stratified_split(rows: list[Row], test_fraction: float, rng: random.Random) -> tuple[list[Row], list[Row]]:
    """Stratified: each label holds out round(n * test_fraction) rows, at least one, leaving at least one."""
    by_label: dict[str, list[Row]] = defaultdict(list)
    for row in sorted(rows, key=lambda r: r.id):  # sorted first so file order does not move the split
        by_label[row.label].append(row)
    train: list[Row] = []
    test: list[Row] = []
    for label in sorted(by_label):
        group = by_label[label]
        rng.shuffle(group)
        n_test = min(len(group) - 1, max(1, round(len(group) * test_fraction)))
        test += group[:n_test]
        train += group[n_test:]
    return sorted(train, key=lambda r: r.id), sorted(test, key=lambda r: r.id)


# -- writing -------------------------------------------------------------------------------------


def _dvc_executable() -> str:
    beside = Path(sys.executable).parent / "dvc"  # the dvc installed with this package, even if not on PATH
    return str(beside) if beside.exists() else (shutil.which("dvc") or "dvc")


def _run(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        output = (done.stderr or done.stdout).strip()
        raise RuntimeError(f"`{' '.join(cmd)}` failed with exit code {done.returncode}: {output}")


def _tree(root: Path) -> set[Path]:
    return {root, *root.rglob("*")} if root.exists() else set()


class _Undo:
    """What registering an arrival may change, captured before it starts, so a failure can put it back.

    Not restored: DVC's own lock files under .dvc/tmp. The git index is only written by the last step.
    Rolled back from the journal after a kill, the cache objects `dvc add` made stay (`dvc gc` drops them).
    """

    def __init__(self, ws: Workspace, key: str) -> None:
        self.saved = {
            path: path.read_bytes() if path.exists() else None
            for path in (ws.stream_file, ws.arrivals_dir / ".gitignore", ws.arrival_dvc_file(key))
        }
        new_dir = ws.arrival_dir(key)
        while not new_dir.parent.exists():  # the topmost folder this arrival creates (data/ in a new workspace)
            new_dir = new_dir.parent
        self.new_dir = new_dir
        self.cache = ws.root / ".dvc" / "cache"
        self.cache_before: set[Path] | None = _tree(self.cache)

    @classmethod
    def from_journal(cls, ws: Workspace, journal: dict) -> "_Undo":
        undo = cls.__new__(cls)
        undo.saved = {ws.root / rel: None if data is None else base64.b64decode(data)
                      for rel, data in journal["saved"].items()}
        undo.new_dir = ws.root / journal["new_dir"]
        undo.cache, undo.cache_before = ws.root / ".dvc" / "cache", None
        return undo

    def journal(self, ws: Workspace, key: str, source: Path) -> dict:
        return {"key": key, "source": str(source), "pid": os.getpid(), "started": time.time(),
                "new_dir": self.new_dir.relative_to(ws.root).as_posix(),
                "saved": {path.relative_to(ws.root).as_posix(): None if data is None else base64.b64encode(data).decode()
                          for path, data in self.saved.items()}}

    def __call__(self) -> None:
        shutil.rmtree(self.new_dir, ignore_errors=True)
        for path, content in self.saved.items():
            if content is None:
                path.unlink(missing_ok=True)
            elif not path.exists() or path.read_bytes() != content:
                write_atomic(path, content)
        if self.cache_before is None:
            return
        # Objects `dvc add` put in the cache; reverse order removes files before their folders.
        for path in sorted(_tree(self.cache) - self.cache_before, reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()


def _register(ws: Workspace, key: str, files: dict[Path, bytes], old_keys: list[str], source: Path) -> None:
    undo = _Undo(ws, key)
    journal = ws.root / INGEST_JOURNAL
    made_folder = not journal.parent.exists()  # .continual/: a workspace made before `continual init` wrote it
    journal.parent.mkdir(exist_ok=True)
    write_atomic(journal, json.dumps(undo.journal(ws, key, source)).encode())  # first: a kill from here on is undone
    try:
        ws.arrival_dir(key).mkdir(parents=True)
        for path, data in files.items():
            write_atomic(path, data)
        arrival = str(ws.arrival_dir(key).relative_to(ws.root))
        # --wait-for-lock: a `dvc repro` holds DVC's repo lock between its stages; wait rather than fail.
        _run([_dvc_executable(), "--wait-for-lock", "add", arrival], ws.root)
        write_atomic(ws.stream_file, ws.stream_text(old_keys + [key]).encode())  # the commit point
        tracked = [ws.arrival_dvc_file(key), ws.arrivals_dir / ".gitignore", ws.stream_file]
        _run(["git", "add", "--", *(str(p.relative_to(ws.root)) for p in tracked)], ws.root)
    except BaseException:
        undo()
        journal.unlink(missing_ok=True)
        if made_folder:
            shutil.rmtree(journal.parent, ignore_errors=True)
        raise
    journal.unlink(missing_ok=True)
