"""continual.arrivals.ingest on real workspaces (git + DVC in tmp_path)."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import yaml

from continual.arrivals import journal
from continual.arrivals.ingest import ingest_file
from continual.arrivals.parse import ArrivalError
from continual.arrivals.split import read_split
from continual.arrivals.verify import verify_arrivals
from continual.params import load_params
from continual.workspace.layout import Workspace
from helpers import labelled, make_workspace, snapshot, write_csv


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return make_workspace(tmp_path / "ws")


@pytest.fixture
def params(ws: Workspace) -> dict:
    return load_params(ws.params_file)


def staged(ws: Workspace) -> set[str]:
    # ls-files only reads the index (git status could rewrite it).
    return set(subprocess.run(["git", "ls-files"], cwd=ws.root, capture_output=True, text=True).stdout.split())


# -- good files ----------------------------------------------------------------------------------


def test_csv_arrival_is_written_split_tracked_and_registered(ws, params, tmp_path):
    source = write_csv(tmp_path / "in" / "tweets.csv", labelled(10, ("neg", "neu", "pos")))
    report = ingest_file(ws, source, "tweets", params)

    key = "0001-tweets"
    assert report.key == key and report.rows == 30 and (report.train, report.test) == (24, 6)
    assert report.new_labels == ["neg", "neu", "pos"]
    assert key in report.summary()
    train, test = read_split(ws, key, "train"), read_split(ws, key, "test")
    for label in ("neg", "neu", "pos"):  # stratified: round(10 * 0.2) of each label held out
        assert sum(r["label"] == label for r in test) == 2
        assert sum(r["label"] == label for r in train) == 8
    assert {r["id"] for r in train}.isdisjoint({r["id"] for r in test})
    assert {r["text"] for r in train + test} == {text for text, _ in labelled(10, ("neg", "neu", "pos"))}
    assert [r["id"] for r in train] == sorted(r["id"] for r in train)
    assert set(train[0]) == {"id", "text", "label"} and train[0]["id"].startswith("tweets-")

    record = json.loads(ws.arrival_record_file(key).read_text())
    assert record["index"] == 1 and record["source"] == "tweets.csv"
    assert record["source_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert record["labels"]["test"] == {"neg": 2, "neu": 2, "pos": 2}

    assert ws.arrival_dvc_file(key).exists()
    assert f"/{key}" in (ws.arrivals_dir / ".gitignore").read_text().split()
    assert ws.stream() == [key]
    assert yaml.safe_load(ws.stream_file.read_text())["rounds"][key]["index"] == 1
    assert {f"data/arrivals/{key}.dvc", "data/arrivals/.gitignore", "stream.yaml"} <= staged(ws)
    verify_arrivals(ws)


def test_jsonl_arrival_keeps_ids_strips_text_and_normalises_crlf(ws, params, tmp_path):
    lines = [{"id": i, "text": f"  movie {i}\r\nline two  ", "label": i % 2} for i in range(8)]
    source = tmp_path / "movies.json-lines"
    source.write_bytes(b"\r\n".join(json.dumps(x).encode() for x in lines) + b"\r\n")
    report = ingest_file(ws, source, "movies", params)

    rows = read_split(ws, report.key, "train") + read_split(ws, report.key, "test")
    assert sorted(r["id"] for r in rows) == [str(i) for i in range(8)]
    assert {r["text"] for r in rows} == {f"movie {i}\nline two" for i in range(8)}
    assert {r["label"] for r in rows} == {"0", "1"}
    assert report.test == 2  # one of each label: round(4 * 0.2) = 1


def test_format_is_sniffed_when_the_extension_says_nothing(ws, params, tmp_path):
    source = tmp_path / "nyt.txt"
    source.write_text("".join(json.dumps({"text": text, "label": label}) + "\n" for text, label in labelled(3)))
    assert ingest_file(ws, source, "nyt", params).rows == 6


def test_split_is_reproducible_and_follows_the_seed(tmp_path):
    source = write_csv(tmp_path / "in.csv", labelled(20))
    out = []
    for name, seed in (("a", 42), ("b", 42), ("c", 7)):
        ws = make_workspace(tmp_path / name)
        ingest_file(ws, source, "amazon", {**load_params(ws.params_file), "seed": seed})
        out.append([ws.arrival_split_file("0001-amazon", split).read_bytes() for split in ("train", "test")])
    a, b, c = out
    assert a == b
    assert a != c


def test_arrivals_get_consecutive_keys_and_report_new_labels(ws, params, tmp_path):
    first = ingest_file(ws, write_csv(tmp_path / "1.csv", labelled(5)), "tweets", params)
    second = ingest_file(ws, write_csv(tmp_path / "2.csv", labelled(5, ("neg", "sarcasm"), "other")), "movies", params)
    assert (first.key, second.key) == ("0001-tweets", "0002-movies")
    assert second.new_labels == ["sarcasm"]
    assert ws.stream() == ["0001-tweets", "0002-movies"]
    rounds = yaml.safe_load(ws.stream_file.read_text())["rounds"]
    assert [rounds[k]["index"] for k in ws.stream()] == [1, 2]
    assert json.loads(ws.arrival_record_file("0002-movies").read_text())["index"] == 2
    verify_arrivals(ws)


def test_concurrent_ingests_take_turns(ws, tmp_path):
    # Three `continual ingest` processes at once: each must see the arrivals registered before it.
    cli = str(Path(sys.executable).parent / "continual")
    shared = ("a text every file holds", "neg")
    procs = [subprocess.Popen([cli, "-C", str(ws.root), "ingest",
                               str(write_csv(tmp_path / f"{name}.csv", [shared, *labelled(5, prefix=name)])),
                               "--name", name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("tweets", "movies", "amazon")]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    keys = ws.stream()
    assert [k.split("-", 1)[0] for k in keys] == ["0001", "0002", "0003"]
    assert sorted(Workspace.arrival_name(k) for k in keys) == ["amazon", "movies", "tweets"]
    holders = [k for k in keys for split in ("train", "test") if shared[0] in {r["text"] for r in read_split(ws, k, split)}]
    assert holders == keys[:1]  # the later two saw it in the first arrival and dropped it
    verify_arrivals(ws)


@pytest.mark.parametrize("policy", ["drop", "keep"])
def test_duplicates_are_reported_and_dropped_or_kept(ws, params, tmp_path, policy):
    ingest_file(ws, write_csv(tmp_path / "1.csv", labelled(5)), "tweets", params)
    rows = labelled(5, prefix="fresh") + [
        ("  REVIEW   neg number 0 ", "neg"),  # an earlier arrival's text, other case and spacing
        ("fresh neg number 1", "neg"),  # repeats a row of this file
        ("fresh pos number 2", "neg"),  # repeats a row of this file with another label
    ]
    params["ingest"]["duplicates"] = policy
    report = ingest_file(ws, write_csv(tmp_path / "2.csv", rows), "movies", params)

    d = report.duplicates
    assert (d.seen_before, d.within_file, d.conflicting_labels) == (1, 2, 1)
    assert any("line 14 repeats line 9" in e and "'neg' instead of 'pos'" in e for e in d.examples)
    assert d.dropped == (3 if policy == "drop" else 0)
    assert report.train + report.test == (10 if policy == "drop" else 13)
    assert "1 seen in earlier arrivals" in report.summary()


def test_a_text_back_with_another_label_is_a_relabel_kept_as_a_train_row(ws, params, tmp_path):
    ingest_file(ws, write_csv(tmp_path / "1.csv", labelled(5)), "tweets", params)
    rows = labelled(5, prefix="fresh") + [
        ("review neg number 0", "pos"),  # line 12: a correction
        ("  REVIEW neg   number 1", "pos"),  # line 13: a correction, other case and spacing
        ("review pos number 0", "pos"),  # the same label: a duplicate
        ("review neg number 0", "pos"),  # line 15: repeats line 12
    ]
    report = ingest_file(ws, write_csv(tmp_path / "2.csv", rows), "movies", params)

    r, d = report.relabels, report.duplicates
    assert (r.count, d.seen_before, d.within_file, d.dropped) == (2, 1, 1, 2)
    assert r.examples == ["line 12: 'review neg number 0' was 'neg' in 0001-tweets, now 'pos'",
                          "line 13: 'REVIEW neg   number 1' was 'neg' in 0001-tweets, now 'pos'"]
    summary = report.summary()
    assert "relabels: 2 texts of earlier arrivals came back with another label: kept as train rows" in summary
    assert r.examples[0] in summary
    train = {row["text"]: row["label"] for row in read_split(ws, report.key, "train")}
    test = {row["text"] for row in read_split(ws, report.key, "test")}
    assert train["review neg number 0"] == "pos" and train["REVIEW neg   number 1"] == "pos"
    assert not {"review neg number 0", "REVIEW neg   number 1"} & test  # never tested on a text seen before
    assert (report.train, report.test) == (10, 2)
    assert json.loads(ws.arrival_record_file(report.key).read_text())["relabels"]["count"] == 2

    # The latest label is the one compared: the same correction again is a duplicate, undoing it a relabel.
    back = labelled(5, prefix="third") + [("review neg number 0", "neg"), ("review neg number 1", "pos")]
    third = ingest_file(ws, write_csv(tmp_path / "3.csv", back), "news", params)
    assert (third.relabels.count, third.duplicates.seen_before) == (1, 1)
    assert third.relabels.examples == ["line 12: 'review neg number 0' was 'pos' in 0002-movies, now 'neg'"]


def test_relabels_dropped_by_params_are_a_warning(ws, params, tmp_path):
    ingest_file(ws, write_csv(tmp_path / "1.csv", labelled(5)), "tweets", params)
    params["ingest"]["relabels"] = "drop"
    rows = labelled(5, prefix="fresh") + [("review neg number 0", "pos")]
    report = ingest_file(ws, write_csv(tmp_path / "2.csv", rows), "movies", params)
    assert report.relabels.count == 1 and report.train + report.test == 10
    assert any("1 texts of earlier arrivals came back with another label: DROPPED" in w for w in report.warnings)
    assert "warning: 1 texts of earlier arrivals came back" in report.summary()
    params["ingest"]["relabels"] = "newest"
    with pytest.raises(ValueError, match="ingest.relabels must be keep or drop, not 'newest'"):
        ingest_file(ws, write_csv(tmp_path / "3.csv", labelled(5, prefix="x")), "news", params)


def test_a_file_of_only_relabels_is_refused_and_nothing_changes(ws, params, tmp_path):
    ingest_file(ws, write_csv(tmp_path / "1.csv", labelled(5)), "tweets", params)
    source = write_csv(tmp_path / "2.csv", [(f"review neg number {i}", "pos") for i in range(5)])
    before = snapshot(ws.root)
    with pytest.raises(ArrivalError, match="all 5 rows kept are relabelled texts of earlier arrivals") as caught:
        ingest_file(ws, source, "movies", params)
    assert str(source) in str(caught.value)
    assert snapshot(ws.root) == before


# -- bad files: rejected, the workspace untouched ------------------------------------------------

LONG = "x" * 1_000_001
BAD_FILES = {
    "not_utf8": ("a.csv", b"text,label\nfine,pos\nbad \xff byte,neg\n", ["line 3", "not UTF-8", "offset 24"]),
    "utf16": ("a.csv", "text,label\nhi,pos\n".encode("utf-16"), ["UTF-16"]),
    "binary": ("a.csv", b"text,label\nab\x00c,pos\n", ["line 2", "binary file", "NUL"]),
    "no_text_column": ("a.csv", b"body,label\nhi,pos\nho,pos\n", ["line 1", "missing `text` column"]),
    "no_label_column": ("a.csv", b"text,tag\nhi,pos\nho,pos\n", ["line 1", "missing `label` column"]),
    "no_label_field": ("a.jsonl", b'{"text": "hi", "label": "pos"}\n{"text": "ho"}\n', ["line 2", "missing `label`"]),
    "empty": ("a.csv", b"", ["the file is empty"]),
    "blank": ("a.jsonl", b"\n  \n", ["the file is empty"]),
    "header_only": ("a.csv", b"text,label\n", ["no rows"]),
    "empty_text": ("a.csv", b"text,label\nhi,pos\n   ,pos\n", ["line 3", "empty text"]),
    "empty_label": ("a.csv", b"text,label\nhi,pos\nho, \n", ["line 3", "empty label"]),
    "null_label": ("a.jsonl", b'{"text": "hi", "label": null}\n', ["line 1", "empty label"]),
    "too_few": ("a.csv", b"text,label\na,pos\nb,pos\nc,neg\n", ["too few examples", "'neg' has 1"]),
    "wrong_field_count": ("a.csv", b"text,label\na,pos\nb,pos,extra\n", ["line 3", "3 fields", "header has 2"]),
    "open_quote": ("a.csv", b'text,label\na,pos\n"b,pos\nc,neg\n', ["line 3", "not valid CSV", "never closed"]),
    "bad_json": ("a.jsonl", b'{"text": "a", "label": "p"}\n{"text": "b",\n', ["line 2", "not valid JSON"]),
    "json_not_object": ("a.jsonl", b'["a", "pos"]\n', ["line 1", "expected a JSON object"]),
    "too_long": ("a.csv", f"text,label\nok,pos\n{LONG},pos\n".encode(), ["line 3", "1000001 bytes", "max_text_bytes"]),
    "duplicate_column": ("a.csv", b"text,text,label\na,b,pos\n", ["line 1", "names a column twice", "'text'"]),
    "invisible_text": ("a.csv", "text,label\nhi,pos\n\u200b\u2060 \ufeff,pos\n".encode(), ["line 3", "empty text", "invisible"]),
    "invisible_label": ("a.csv", "text,label\nhi,pos\nho,\u200d\n".encode(), ["line 3", "empty label"]),
    "invisible_only_label": ("a.jsonl", '{"text": "hi", "label": "pos"}\n{"text": "ho", "label": "\u200b\u2060\ufeff"}\n'
                             .encode(), ["line 2", "empty label", "only invisible characters"]),
    "blank_letters_label": ("a.csv", "text,label\nhi,pos\nho,\u00ad\u200e\u3164\ufe0f\u2800\n".encode(),
                            ["line 3", "empty label", "only invisible characters"]),
    "label_5000_digits": ("a.jsonl", b'{"text": "a", "label": 1}\n{"text": "b", "label": ' + b"9" * 5000 + b"}\n",
                          ["line 2", "a number of more than 4300 digits"]),
    "label_200_digits": ("a.jsonl", b'{"text": "a", "label": 1}\n{"text": "b", "label": ' + b"9" * 200 + b"}\n",
                         ["line 2", "label is 200 characters long", "ingest.max_label_chars is 100"]),
    "label_too_long": ("a.csv", f"text,label\nhi,pos\nho,{'x' * 5000}\n".encode(),
                       ["line 3", "label is 5000 characters long", "max_label_chars"]),
    "lone_surrogate": ("a.jsonl", b'{"text": "a", "label": "p"}\n{"text": "b \\ud800", "label": "p"}\n',
                       ["line 2", "lone surrogate"]),
    "json_array": ("a.json", json.dumps([{"text": f"t{i} " * 40, "label": "p"} for i in range(50)]).encode(),
                   ["a JSON array", "JSON Lines"]),
    "duplicate_id": ("a.csv", b"id,text,label\nx,a,pos\nx,b,pos\n", ["line 3", "duplicate id 'x'", "line 2"]),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_file_is_rejected_and_nothing_changes(ws, params, tmp_path, case):
    file_name, content, expected = BAD_FILES[case]
    source = tmp_path / "in" / file_name
    source.parent.mkdir()
    source.write_bytes(content)
    before = snapshot(ws.root)
    with pytest.raises(ArrivalError) as caught:
        ingest_file(ws, source, "tweets", params)
    message = str(caught.value)
    assert str(source) in message
    for part in expected:
        assert part in message
    assert snapshot(ws.root) == before


@pytest.mark.parametrize("name, expected", [
    ("Bad Name", "is not allowed"), ("tweets", "already used by 0001-tweets"),
    ("../x", "is not allowed"), ("a/b", "is not allowed"), ("abc\n", "'abc\\n' is not allowed"), ("", "is not allowed"),
    ("a" * 64, "is not allowed"), ("café", "is not allowed"), ("٣", "is not allowed"), ("-x", "is not allowed"),
])
def test_bad_name_is_rejected_and_nothing_changes(ws, params, tmp_path, name, expected):
    ingest_file(ws, write_csv(tmp_path / "1.csv", labelled(5)), "tweets", params)
    source = write_csv(tmp_path / "2.csv", labelled(5, prefix="other"))
    before = snapshot(ws.root)
    with pytest.raises(ArrivalError, match=re.escape(expected)) as caught:
        ingest_file(ws, source, name, params)
    assert str(source) in str(caught.value)
    assert snapshot(ws.root) == before


def test_a_source_that_is_not_a_regular_file_is_named_so(ws, params, tmp_path):
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    before = snapshot(ws.root)
    for source, expected in ((folder, "not a regular file (a folder)"), (Path("/dev/null"), "not a regular file"),
                             (tmp_path / "missing.csv", "no such file")):
        with pytest.raises(ArrivalError, match=f"^{re.escape(f'{source}: {expected}')}"):
            ingest_file(ws, source, "tweets", params)
    assert snapshot(ws.root) == before


def test_a_long_header_is_quoted_short(ws, params, tmp_path):
    source = tmp_path / "wide.csv"
    source.write_text(",".join(f"column{i}" for i in range(200)) + "\n" + ",".join("x" * 200) + "\n")
    with pytest.raises(ArrivalError, match="missing `text` column") as caught:
        ingest_file(ws, source, "tweets", params)
    assert len(str(caught.value)) < len(str(source)) + 160


def test_long_texts_are_kept_and_counted(ws, params, tmp_path):
    long = "word " * 20_000  # 100,000 characters: over the model's max_length, under ingest.max_text_bytes
    rows = [(f"{long} {label} {i}", label) for label in ("neg", "pos") for i in range(3)] + labelled(3)
    report = ingest_file(ws, write_csv(tmp_path / "long.csv", rows), "tweets", params)
    assert report.rows == 12
    warning = f"6 texts are longer than model.max_length ({params['model']['max_length']} tokens)"
    assert any(warning in w for w in report.warnings)
    assert warning in report.summary()
    assert any(warning in w for w in json.loads(ws.arrival_record_file(report.key).read_text())["warnings"])
    assert max(len(r["text"]) for r in read_split(ws, report.key, "train")) > 100_000


def test_labels_that_differ_only_in_case_are_a_warning(ws, params, tmp_path):
    first = ingest_file(ws, write_csv(tmp_path / "1.csv", labelled(3, ("neg", "pos"))), "tweets", params)
    assert first.warnings == []
    rows = labelled(3, ("Pos", "neg\u200b", "fresh"), prefix="other")
    report = ingest_file(ws, write_csv(tmp_path / "2.csv", rows), "movies", params)
    assert "labels that differ only in case or invisible characters: 'Pos', 'pos'" in report.summary()
    assert any("'neg', 'neg\\u200b'" in w for w in report.warnings), report.warnings
    assert len(report.warnings) == 2
    record = json.loads(ws.arrival_record_file(report.key).read_text())
    assert record["warnings"] == report.warnings


def test_labels_are_stored_in_nfc_one_class_for_two_spellings(ws, params, tmp_path):
    nfc, nfd = unicodedata.normalize("NFC", "caf\u00e9"), unicodedata.normalize("NFD", "caf\u00e9")
    assert nfc != nfd
    rows = [(f"order {i}", nfc if i % 2 else nfd) for i in range(8)] + labelled(4)
    report = ingest_file(ws, write_csv(tmp_path / "1.csv", rows), "tweets", params)
    assert report.new_labels == ["caf\u00e9", "neg", "pos"] and report.warnings == []
    stored = {row["label"] for split in ("train", "test") for row in read_split(ws, report.key, split)}
    assert stored == {nfc, "neg", "pos"}
    assert report.label_counts["train"][nfc] + report.label_counts["test"][nfc] == 8
    later = ingest_file(ws, write_csv(tmp_path / "2.csv", [(f"menu {i}", nfd) for i in range(4)]), "movies", params)
    assert later.new_labels == [] and set(later.label_counts["train"]) == {nfc}


def test_the_label_length_limit_is_a_param(ws, params, tmp_path):
    params["ingest"]["max_label_chars"] = 3
    source = write_csv(tmp_path / "1.csv", labelled(3, ("neg", "posi")))
    before = snapshot(ws.root)
    with pytest.raises(ArrivalError, match=re.escape(f"{source}: line 5: label is 4 characters long ('posi')")):
        ingest_file(ws, source, "tweets", params)
    params["ingest"]["max_label_chars"] = 0
    with pytest.raises(ValueError, match="ingest.max_label_chars must be a positive integer, not 0"):
        ingest_file(ws, source, "tweets", params)
    assert snapshot(ws.root) == before


# -- a failure after writing started is rolled back ----------------------------------------------


def test_failing_dvc_add_is_rolled_back(ws, params, tmp_path, monkeypatch):
    monkeypatch.setattr(journal, "dvc_executable", lambda: "false")
    before = snapshot(ws.root)
    with pytest.raises(RuntimeError, match="failed"):
        ingest_file(ws, write_csv(tmp_path / "1.csv", labelled(5)), "tweets", params)
    assert snapshot(ws.root) == before


def test_failing_git_add_rolls_back_dvc_add_and_stream(ws, params, tmp_path, monkeypatch):
    ingest_file(ws, write_csv(tmp_path / "1.csv", labelled(5)), "tweets", params)
    run = journal.run_command

    def git_fails(cmd, cwd):
        if cmd[0] == "git":
            raise RuntimeError("git add failed")
        run(cmd, cwd)

    monkeypatch.setattr(journal, "run_command", git_fails)
    before = snapshot(ws.root, skip=(".dvc/tmp",))  # DVC's own lock files are not ours to restore
    with pytest.raises(RuntimeError, match="git add failed"):
        ingest_file(ws, write_csv(tmp_path / "2.csv", labelled(5, prefix="other")), "movies", params)
    assert snapshot(ws.root, skip=(".dvc/tmp",)) == before
    assert ws.stream() == ["0001-tweets"]


# -- verify_arrivals -----------------------------------------------------------------------------


def test_verify_reports_a_file_copied_in_by_hand(ws, params, tmp_path):
    ingest_file(ws, write_csv(tmp_path / "1.csv", labelled(5)), "tweets", params)
    shutil.copy(tmp_path / "1.csv", ws.arrivals_dir / "extra.csv")
    with pytest.raises(ArrivalError) as caught:
        verify_arrivals(ws)
    assert "data/arrivals/extra.csv" in str(caught.value)
    assert "continual ingest FILE --name NAME" in str(caught.value)


def test_verify_reports_a_file_added_to_a_registered_arrival(ws, params, tmp_path):
    ingest_file(ws, write_csv(tmp_path / "1.csv", labelled(5)), "tweets", params)
    (ws.arrival_dir("0001-tweets") / "more.jsonl").write_text("{}\n")
    with pytest.raises(ArrivalError, match="0001-tweets/more.jsonl"):
        verify_arrivals(ws)


def test_verify_reports_a_missing_arrival(ws, params, tmp_path):
    ingest_file(ws, write_csv(tmp_path / "1.csv", labelled(5)), "tweets", params)
    shutil.rmtree(ws.arrival_dir("0001-tweets"))
    with pytest.raises(ArrivalError, match="missing from data/arrivals/: 0001-tweets") as caught:
        verify_arrivals(ws)
    assert "dvc checkout" in str(caught.value)


def test_verify_accepts_an_empty_workspace(ws):
    verify_arrivals(ws)
    assert not os.path.exists(ws.arrivals_dir)
