"""`continual capture export`: the texts a server captured (service.monitoring.capture) as a CSV to label.

The CSV is one `continual ingest` reads as it is: a `text` and a `label` column (the model's prediction,
the suggested label: correct it where it is wrong), plus columns that help the labeller and that ingest
ignores (it reads `text`, `label` and an optional `id`, and no others): the prediction again (so that a
corrected label stays visible as one), its confidence, the model version and round, when the text was last
captured and how many times. Rows are sorted least confident first: those are the most worth a look.

Every text is written as ingest will read it back (Windows line ends made "\\n", surrounding whitespace
stripped: what ingest does to each text), so a text survives the round trip unchanged, newlines, quotes,
commas, U+2028, U+0085, emoji and right-to-left text included. Texts ingest would refuse (empty, over
``ingest.max_text_bytes``, a NUL character, a lone surrogate, which UTF-8 cannot hold) are left out and
counted: one of them would make ingest refuse the whole file. Identical texts are written once, with the
newest capture's prediction.

Captured texts come from the internet. A cell that starts with =, +, -, @, a tab or CR (and is not a plain number)
is one a spreadsheet may run as a formula (CSV injection), so it is written with a leading ' that makes a spreadsheet
show it as text, unless ``neutralise_formulas`` is off (`--keep-formulas`). Such a cell is then the one exception to
the round trip: ingest reads the ' as part of the text. The file is written 0600, as the captures are.
"""
from __future__ import annotations

import csv
import io
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from continual.arrivals.parse import JSONL_SUFFIXES, ArrivalError, checked_row
from continual.workspace.files import write_atomic

COLUMNS = ("text", "label", "prediction", "confidence", "model_version", "round_key", "last_captured",
           "times_captured")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may run as a formula (OWASP, CSV injection)
PLAIN_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")  # -1, +0.5: never a formula
TEXT_CELLS = ("text", "label", "prediction", "model_version", "round_key", "last_captured")


@dataclass
class ExportReport:
    out: Path
    rows: int
    files: list[tuple[Path, int]]  # each capture file read, with its rows
    duplicates: int = 0  # rows of a text already exported
    outside_range: int = 0  # left out by --min-confidence / --max-confidence
    skipped: Counter = field(default_factory=Counter)  # reason -> rows ingest would refuse, or not captured rows
    labels: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        read = ", ".join(f"{path} ({n} rows)" for path, n in self.files) or "no capture files"
        lines = [f"wrote {self.rows} rows to {self.out} from {read}"]
        left = [f"{self.duplicates} repeated texts"] if self.duplicates else []
        if self.outside_range:
            left.append(f"{self.outside_range} outside the confidence range")
        left += [f"{n} {reason}" for reason, n in sorted(self.skipped.items())]
        if left:
            lines.append(f"  left out: {', '.join(left)}")
        if self.labels:
            lines.append(f"  suggested labels: {', '.join(f'{k} {v}' for k, v in sorted(self.labels.items()))}")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def export_captures(folder: Path, out: Path, params: dict[str, Any], min_confidence: float | None = None,
                    max_confidence: float | None = None, neutralise_formulas: bool = True) -> ExportReport:
    """Write the captures of ``folder`` to the CSV ``out`` (atomically, mode 0600); raises ValueError if none
    qualify. ``neutralise_formulas``: cells a spreadsheet would run as formulas get a leading '."""
    from service.monitoring.capture_files import read_capture_files

    folder, out = Path(folder), Path(out)
    if out.suffix.lower() in JSONL_SUFFIXES or out.suffix.lower() != ".csv":
        raise ValueError(f"{out}: the export is CSV; name the file *.csv (ingest reads a file by its suffix)")
    for name, value in (("--min-confidence", min_confidence), ("--max-confidence", max_confidence)):
        if value is not None and not 0 <= value <= 1:
            raise ValueError(f"{name} must be between 0 and 1, not {value}")
    if min_confidence is not None and max_confidence is not None and min_confidence > max_confidence:
        raise ValueError(f"--min-confidence {min_confidence} is above --max-confidence {max_confidence}")
    if not folder.is_dir():
        raise ValueError(f"{folder}: no capture folder (set capture_rate and capture_dir on the server, or pass "
                         "--dir)")
    max_bytes = int(params["ingest"]["max_text_bytes"])

    files = read_capture_files(folder)
    report = ExportReport(out=out, rows=0, files=[(path, len(rows)) for path, rows in files])
    newest: dict[str, dict[str, Any]] = {}  # text as ingest reads it -> the row to write
    for _, rows in files:  # oldest first: a later capture of a text replaces an earlier one
        for record in rows:
            row = _exportable(record, max_bytes, report.skipped)
            if row is None:
                continue
            seen = newest.pop(row["text"], None)  # popped: the newest goes last, like a fresh one
            if seen is not None:
                report.duplicates += 1
                row["times_captured"] += seen["times_captured"]
            newest[row["text"]] = row
    kept = []
    for row in newest.values():
        if (min_confidence is not None and row["confidence"] < min_confidence) or \
                (max_confidence is not None and row["confidence"] > max_confidence):
            report.outside_range += 1
        else:
            kept.append(row)
    if not kept:
        read = sum(n for _, n in report.files)
        why = report.summary().split("\n")[1].strip() if read else "no captured rows"
        raise ValueError(f"nothing to export from {folder} ({read} rows read): {why}")
    kept.sort(key=lambda r: (r["confidence"], r["text"]))

    formulas = sum(_formula(row[c]) for row in kept for c in TEXT_CELLS)
    cells = [[_neutralised(row[c]) if neutralise_formulas and c in TEXT_CELLS else row[c] for c in COLUMNS]
             for row in kept]
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)  # quotes a field holding a comma, a quote, "\r" or "\n"; "\r\n" ends a row
    writer.writerow(COLUMNS)
    writer.writerows(cells)
    umask = os.umask(0o077)  # the captured texts stay private in the export (this is a one-thread CLI command)
    try:
        write_atomic(out, buffer.getvalue().encode("utf-8"))
    finally:
        os.umask(umask)

    report.rows = len(kept)
    report.labels = dict(Counter(row["label"] for row in kept))
    need = max(2, int(params["ingest"]["min_per_label"]))
    short = {label: n for label, n in sorted(report.labels.items()) if n < need}
    if short:
        report.warnings.append(
            f"ingest refuses a label with fewer than {need} rows (ingest.min_per_label): "
            f"{', '.join(f'{label!r} has {n}' for label, n in short.items())}; add rows of it or relabel them")
    if formulas and neutralise_formulas:
        report.warnings.append(
            f"{formulas} cells start with =, +, -, @, a tab or CR, which a spreadsheet may run as a formula: written "
            "with a leading ' so that it shows them as text. Ingest reads that ' as part of the text: if your "
            "spreadsheet saves it, remove it before ingest, or export with --keep-formulas to write them as captured")
    elif formulas:
        report.warnings.append(
            f"{formulas} cells start with =, +, -, @, a tab or CR, which a spreadsheet may run as a formula: these "
            "are texts from the internet, so import the file as text rather than opening it with formulas on")
    return report


def _formula(value: str) -> bool:
    """Whether a spreadsheet may read ``value`` as a formula."""
    return value.startswith(FORMULA_START) and not PLAIN_NUMBER.fullmatch(value)


def _neutralised(value: str) -> str:
    return "'" + value if _formula(value) else value


def _exportable(record: dict, max_bytes: int, skipped: Counter) -> dict[str, Any] | None:
    """The CSV row for one captured record, its text and label as ingest will read them; None (and the
    reason counted in ``skipped``) when it is not a captured row or ingest would refuse it."""
    text, prediction, confidence = record.get("text"), record.get("prediction"), record.get("confidence")
    if isinstance(prediction, int) and not isinstance(prediction, bool):
        prediction = str(prediction)
    if not isinstance(text, str) or not isinstance(prediction, str) or isinstance(confidence, bool) \
            or not isinstance(confidence, (int, float)) or not math.isfinite(confidence):
        skipped["malformed rows"] += 1
        return None
    if "\0" in text or "\0" in prediction:
        skipped["with a NUL character (ingest reads a file holding one as binary)"] += 1
        return None
    try:
        (text + prediction).encode("utf-8")
    except UnicodeEncodeError:
        skipped["with a lone surrogate (not valid Unicode; UTF-8 cannot hold it)"] += 1
        return None
    try:
        row = checked_row(Path("capture"), 0, {"text": text, "label": prediction}, "capture", max_bytes)
    except ArrivalError as e:
        problem = str(e).split(": ", 1)[-1]
        if "empty text" in problem:
            skipped["empty texts"] += 1
        elif "empty label" in problem:
            skipped["without a prediction"] += 1
        elif "max_text_bytes" in problem:
            skipped[f"longer than ingest.max_text_bytes ({max_bytes})"] += 1
        else:
            skipped[f"refused by ingest ({problem})"] += 1
        return None
    version, round_key = record.get("model_version"), record.get("round_key")
    return {
        "text": row.text,
        "label": row.label,
        "prediction": row.label,
        "confidence": float(confidence),
        "model_version": "" if version is None else _cell(str(version)),
        "round_key": "" if round_key is None else _cell(str(round_key)),
        "last_captured": _cell(str(record.get("time") or "")),
        "times_captured": 1,
    }


def _cell(value: str) -> str:
    """A side column's value, safe to write: no NUL, nothing UTF-8 cannot hold."""
    return value.replace("\0", "").encode("utf-8", "replace").decode("utf-8")
