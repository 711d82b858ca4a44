"""Reading a labelled file (CSV or JSON Lines) into checked rows, before anything is written.

Every refusal is an ``ArrivalError`` that names the file and, where there is one, the line.
"""
from __future__ import annotations

import codecs
import csv
import io
import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from continual import progress
from continual.arrivals.jsonl import JsonlError, parse_lines

JSONL_SUFFIXES = {".jsonl", ".json-lines", ".ndjson"}
QUOTED_MAX = 80  # characters of the file quoted in a message
# Not whitespace to str.strip(), yet nothing to read: a text of only these is empty.
INVISIBLE = re.compile("[\u200b\u200c\u200d\u2060\ufeff]")
# Drawn as nothing, besides whitespace and the format (Cf: zero-width spaces and joiners, BOM, bidi marks, soft
# hyphen, tags) and control characters: Hangul fillers, the braille blank, the grapheme joiner, Khmer inherent
# vowels, variation selectors.
_BLANKS = re.compile("[\u115f\u1160\u3164\uffa0\u2800\u034f\u17b4\u17b5\ufe00-\ufe0f\U000e0100-\U000e01ef]")
MAX_LABEL_CHARS = 100  # ingest.max_label_chars when params.yaml has none


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


def file_error(source: Path, line: int | None, problem: str) -> ArrivalError:
    return ArrivalError(f"{source}: line {line}: {problem}" if line else f"{source}: {problem}")


def quoted(text: str) -> str:
    return repr(text if len(text) <= QUOTED_MAX else text[:QUOTED_MAX] + "...")


def read_source(source: Path) -> bytes:
    if not source.exists():
        raise file_error(source, None, "no such file")
    if not source.is_file():  # a folder, /dev/null, a pipe: reading it would fail, block or mean nothing
        what = "a folder" if source.is_dir() else "a device, pipe or socket"
        raise file_error(source, None, f"not a regular file ({what})")
    try:
        return source.read_bytes()
    except OSError as e:
        raise file_error(source, None, f"cannot read it: {e.strerror}") from None


def _line_at(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _decode(source: Path, data: bytes) -> str:
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise file_error(source, None, "the file is UTF-16; save it as UTF-8")
    nul = data.find(b"\0")
    if nul >= 0:
        raise file_error(source, _line_at(data, nul), f"binary file (NUL byte at byte offset {nul}), not UTF-8 text")
    body = data.removeprefix(codecs.BOM_UTF8)  # spreadsheet exports often start with a BOM
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        offset = e.start + len(data) - len(body)
        raise file_error(source, _line_at(data, offset),
                         f"not UTF-8 (byte 0x{data[offset]:02x} at byte offset {offset})")
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
            raise file_error(source, start, f"not valid CSV: {problem}") from None
        line, start = start, reader.line_num + 1
        if not any(cell.strip() for cell in record):
            continue  # blank line
        if header is None:
            header = [cell.strip() for cell in record]
            for column in ("text", "label"):
                if column not in header:
                    shown = quoted(", ".join(header))
                    raise file_error(source, line, f"missing `{column}` column (the header has: {shown})")
            repeated = sorted({c for c in header if header.count(c) > 1})
            if repeated:  # which `text` would be the text? Refuse rather than pick one
                raise file_error(source, line, f"the header names a column twice: {', '.join(map(quoted, repeated))}")
            continue
        if len(record) != len(header):
            raise file_error(source, line, f"{len(record)} fields, but the header has {len(header)}")
        yield line, dict(zip(header, record))


def _jsonl_records(source: Path, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    records = parse_lines(text, source)
    while True:
        try:
            line, obj = next(records)
        except StopIteration:
            return
        except JsonlError as e:
            raise file_error(source, e.line, e.problem) from None
        if not isinstance(obj, dict):
            raise file_error(source, line, f"expected a JSON object with `text` and `label`, got {type(obj).__name__}")
        for column in ("text", "label"):
            if column not in obj:
                raise file_error(source, line, f"missing `{column}` field")
        yield line, obj


def _blank(text: str) -> bool:
    """Nothing a reader would see: empty, or only whitespace and characters drawn as nothing."""
    return all(c.isspace() or unicodedata.category(c) in ("Cf", "Cc") for c in _BLANKS.sub("", text))


def checked_row(source: Path, line: int, record: dict[str, Any], name: str, max_bytes: int,
                max_label: int = MAX_LABEL_CHARS) -> Row:
    """One record (``text``, ``label``, optional ``id``) as ingest keeps it, or the ArrivalError ingest raises:
    texts and labels stripped, Windows line ends made "\\n", labels in NFC; the id defaults to NAME-LINE."""
    text, label, id_ = record["text"], record["label"], record.get("id")
    if not isinstance(text, str):
        raise file_error(source, line, "`text` must be a string")
    if label is None:
        label = ""
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        raise file_error(source, line, "`label` must be a string or an integer")
    # Windows line ends inside a text (CSV quoted fields, JSON "\r\n") become "\n": the same text, one spelling.
    text, label = text.replace("\r\n", "\n").replace("\r", "\n").strip(), str(label).strip()
    if not text:
        raise file_error(source, line, "empty text")
    if _blank(text):
        raise file_error(source, line, "empty text (only invisible characters such as zero-width spaces)")
    size = len(text.encode("utf-8"))
    if size > max_bytes:  # long texts are kept (the model reads their start); only absurd ones are refused
        raise file_error(source, line, f"text is {size} bytes long; ingest.max_text_bytes is {max_bytes}")
    if not label:
        raise file_error(source, line, "empty label")
    if _blank(label):
        raise file_error(source, line, f"empty label {quoted(label)}: only invisible characters such as "
                         "zero-width spaces")
    # One spelling per label: "café" typed (NFC) and "café" from a macOS export (NFD) look the same and are one class.
    label = unicodedata.normalize("NFC", label)
    if len(label) > max_label:
        raise file_error(source, line, f"label is {len(label)} characters long ({quoted(label)}); "
                         f"ingest.max_label_chars is {max_label}: a label names a class")
    id_ = "" if id_ is None else str(id_).strip()
    return Row(id=id_ or f"{name}-{line}", text=text, label=label, line=line)


def parse_rows(source: Path, data: bytes, name: str, max_bytes: int, max_label: int = MAX_LABEL_CHARS) -> list[Row]:
    text = _decode(source, data)
    if not text.strip():
        raise file_error(source, None, "the file is empty")
    suffix = source.suffix.lower()
    if suffix not in JSONL_SUFFIXES | {".csv"} and text.lstrip().startswith("["):
        raise file_error(source, None, "a JSON array: ingest reads JSON Lines (one object a line) or CSV")
    is_jsonl = suffix in JSONL_SUFFIXES or (suffix != ".csv" and text.lstrip().startswith("{"))
    records = _jsonl_records(source, text) if is_jsonl else _csv_records(source, text)
    rows: list[Row] = []
    first_line: dict[str, int] = {}
    for line, record in progress.bar(records, desc=f"read {source.name}"):
        row = checked_row(source, line, record, name, max_bytes, max_label)
        if row.id in first_line:
            raise file_error(source, line, f"duplicate id {row.id!r} (first on line {first_line[row.id]})")
        first_line[row.id] = line
        rows.append(row)
    if not rows:
        raise file_error(source, None, "no rows (the file has only a header or blank lines)")
    return rows
