"""JSON Lines, read and written one way for the whole project.

A line ends at "\\n" and nowhere else. ``str.splitlines()`` also breaks at U+0085, U+2028, U+2029, \\x0b,
\\x0c and \\x1c-\\x1e, which ``json.dumps(ensure_ascii=False)`` leaves raw and real text carries (tweets
decoded from cp1252 hold U+0085): a row would be cut in two.
"""
from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from continual.workspace.files import write_atomic

# An escaped surrogate: json.loads turns a lone one into a str that cannot be written back as UTF-8.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class JsonlError(ValueError):
    """A line that is not a JSON value; the message names the file and the 1-based line."""

    def __init__(self, source: str | Path, line: int, problem: str):
        super().__init__(f"{source}: line {line}: {problem}")
        self.source, self.line, self.problem = str(source), line, problem


def parse_lines(text: str, source: str | Path) -> Iterator[tuple[int, Any]]:
    """(1-based line, value) for each non-blank line of ``text``; ``source`` names the file in errors."""
    for line, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as e:
            raise JsonlError(source, line, f"not valid JSON: {e.msg} (column {e.colno})") from None
        except ValueError:  # json turns a number of over sys.get_int_max_str_digits() digits into an int: refused
            raise JsonlError(source, line, f"a number of more than {sys.get_int_max_str_digits()} digits, too long "
                             "to read (a label or id that long is no label or id)") from None
        except RecursionError:  # json's decoder recurses once per level: [[[[... 100,000 deep overflows it
            raise JsonlError(source, line, "not valid JSON here: nested too deeply (arrays or objects "
                             f"more than ~{sys.getrecursionlimit() - 50} levels deep)") from None
        if _SURROGATE_ESCAPE.search(raw):
            try:
                json.dumps(value, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:
                raise JsonlError(source, line, "a lone surrogate (\\ud800-\\udfff escape): not valid Unicode") from None
        yield line, value


def read_jsonl(path: str | Path) -> list[Any]:
    """Every value of a UTF-8 JSON Lines file, in order (blank lines skipped)."""
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JsonlError(path, data.count(b"\n", 0, e.start) + 1, f"not UTF-8 (byte offset {e.start})") from None
    return [value for _, value in parse_lines(text, path)]


def encode_jsonl(rows: Iterable[Mapping[str, Any]]) -> bytes:
    """One JSON object a line, UTF-8, non-ASCII kept as is (json escapes every control character)."""
    lines = []
    for i, row in enumerate(rows, start=1):
        try:
            lines.append((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
        except UnicodeEncodeError as e:
            raise ValueError(f"row {i}: not valid Unicode ({e.reason})") from None
    return b"".join(lines)


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write ``rows`` as JSON Lines, atomically."""
    try:
        data = encode_jsonl(rows)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    write_atomic(path, data)
