"""Capture of served texts (service.monitoring.capture) and `continual capture export` -> `continual ingest`."""
from __future__ import annotations

import csv
import json
import multiprocessing
import os
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from service.monitoring import capture
from service.monitoring.capture import CaptureWriter, capture_record, check_capture_settings
from service.monitoring.capture_files import COUNT, CURRENT, PREVIOUS, read_captures

HOSTILE = [
    "line one\nline two",
    'she said "hi", then left',
    "before\u2028after",
    "cp1252\u0085next",
    "nul\0inside",
    "lone \ud800 surrogate",
    "emoji 😀👍🏽 family 👨‍👩‍👧",
    "RTL שלום עולם مرحبا بالعالم",
    "tab\tseparated",
    "",
]


class Counts:
    """on_written / on_dropped, thread-safe, with a wait for a total."""

    def __init__(self) -> None:
        self.written = 0
        self.dropped: Counter = Counter()
        self.lock = threading.Lock()

    def on_written(self, n: int) -> None:
        with self.lock:
            self.written += n

    def on_dropped(self, reason: str) -> None:
        with self.lock:
            self.dropped[reason] += 1

    def wait(self, check, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not check(self):
            assert time.monotonic() < deadline, f"timed out: written {self.written}, dropped {dict(self.dropped)}"
            time.sleep(0.005)


def writer(folder: Path, counts: Counts, max_rows: int = 100, **kw) -> CaptureWriter:
    return CaptureWriter(folder, max_rows, counts.on_written, counts.on_dropped, **kw)


def record(i: int, text: str | None = None, prediction: str = "pos", confidence: float = 0.9, **extra) -> dict:
    return {**capture_record(f"text {i}" if text is None else text, prediction, confidence, "3", "0002-b"),
            **extra}


def strict_rows(path: Path) -> list[dict]:
    """Every line of a capture file parsed: a torn or partial line fails the test."""
    if not path.exists():
        return []
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"{path} ends in a partial line"
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


# -- the writer --------------------------------------------------------------------------------------------


def test_every_str_round_trips_exactly_and_lines_stay_ascii(tmp_path):
    counts = Counts()
    w = writer(tmp_path, counts)
    w.offer([record(i, text) for i, text in enumerate(HOSTILE)])
    w.close()
    assert counts.written == len(HOSTILE) and not counts.dropped
    assert [r["text"] for r in read_captures(tmp_path)] == HOSTILE
    raw = (tmp_path / CURRENT).read_bytes()
    assert raw.isascii() and raw.count(b"\n") == len(HOSTILE)  # no text can break or add a line
    row = next(read_captures(tmp_path))
    assert set(row) == {"time", "text", "prediction", "confidence", "model_name", "model_version", "round_key"}
    assert row["time"].endswith("+00:00") and row["model_version"] == "3" and row["round_key"] == "0002-b"


def test_rotation_keeps_at_most_two_files_of_max_rows_newest_last(tmp_path):
    counts = Counts()
    w = writer(tmp_path, counts, max_rows=10)
    for start in range(0, 50, 7):  # batches that straddle the rotations
        w.offer([record(i) for i in range(start, min(start + 7, 50))])
    w.close()
    assert counts.written == 50 and not counts.dropped
    previous, current = strict_rows(tmp_path / PREVIOUS), strict_rows(tmp_path / CURRENT)
    assert len(previous) == 10 and len(current) == 10
    assert [r["text"] for r in previous + current] == [f"text {i}" for i in range(30, 50)]
    assert [r["text"] for r in read_captures(tmp_path)] == [f"text {i}" for i in range(30, 50)]
    assert (tmp_path / COUNT).read_text().split()[0] == "10"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CURRENT, PREVIOUS, COUNT, ".capture.lock"])


def test_rotation_by_bytes_keeps_the_folder_under_its_byte_cap(tmp_path):
    """Long texts rotate by bytes long before max_rows; a row longer than max_bytes alone is dropped: the folder
    never holds more than 2 x max_bytes of rows (plus the lock and the 42-byte count)."""
    counts, max_bytes = Counts(), 8192
    w = writer(tmp_path, counts, max_rows=10**6, max_bytes=max_bytes)
    sizes = [(i * 7919) % 3000 for i in range(300)]  # 0..3,000 characters, in batches that straddle rotations
    for start in range(0, 300, 13):
        w.offer([record(i, f"{i} " + "y" * sizes[i]) for i in range(start, min(start + 13, 300))])
    w.offer([record(300, "z" * max_bytes)])  # alone longer than a file may be
    w.close()
    assert counts.written + counts.dropped["too_large"] == 301 and counts.dropped == Counter(too_large=1)
    files = {p.name: p.stat().st_size for p in tmp_path.iterdir()}
    assert files[CURRENT] <= max_bytes and files[PREVIOUS] <= max_bytes
    assert sum(files.values()) <= 2 * max_bytes + 64, files
    kept = [r["text"] for r in read_captures(tmp_path)]
    assert kept[-1].startswith("299 ") and len(kept) > 4  # the newest rows, in order
    assert [int(t.split()[0]) for t in kept] == list(range(300 - len(kept), 300))
    assert (tmp_path / COUNT).read_text().split()[1] == str(files[CURRENT])


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_capture_folder_and_files_are_private_whatever_the_umask(tmp_path, umask):
    """Folder 0700, every file 0600, under the loosest umask and the usual one; a folder and a file an older server
    left readable to all are tightened on the next write."""
    old = os.umask(umask)
    try:
        made = tmp_path / "new" / "captures"
        check_capture_settings(1.0, 2, made)  # what the server does at start
        counts = Counts()
        w = writer(made, counts, max_rows=2)
        w.offer([record(i) for i in range(5)])  # a rotation: both files
        w.close()
        left = tmp_path / "left"
        left.mkdir(mode=0o755)
        os.chmod(left, 0o755)
        (left / CURRENT).write_text(json.dumps(record(0)) + "\n")
        os.chmod(left / CURRENT, 0o644)
        w = writer(left, Counts())
        w.offer([record(1)])
        w.close()
    finally:
        os.umask(old)
    for folder in (made, left):
        assert oct(folder.stat().st_mode & 0o777) == oct(0o700)
        names = sorted(p.name for p in folder.iterdir())
        assert CURRENT in names and ".capture.lock" in names and COUNT in names
        assert {p.name: oct(p.stat().st_mode & 0o777) for p in folder.iterdir()} == {n: oct(0o600) for n in names}
    assert (made / PREVIOUS).exists()


def _write_from_process(folder: str, tag: str, n: int, max_rows: int, start) -> None:
    w = CaptureWriter(Path(folder), max_rows, lambda n: None, lambda reason: os._exit(3))
    start.wait(10)
    for i in range(0, n, 5):
        w.offer([record(j, f"{tag} {j}", padding="x" * (j % 97)) for j in range(i, min(i + 5, n))])
        time.sleep(0.0005)
    w.close(timeout=20)
    os._exit(0 if not w.alive else 4)


@pytest.mark.parametrize("max_rows", [1000, 37])
def test_two_processes_append_to_one_folder_without_losing_or_tearing_rows(tmp_path, max_rows):
    n = 300
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    procs = [ctx.Process(target=_write_from_process, args=(str(tmp_path), tag, n, max_rows, start)) for tag in "ab"]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    previous, current = strict_rows(tmp_path / PREVIOUS), strict_rows(tmp_path / CURRENT)
    total = 2 * n
    if max_rows >= total:
        assert previous == [] and len(current) == total
    else:  # each rotation at exactly max_rows: the current file holds the remainder, the previous a full file
        assert len(previous) == max_rows and len(current) == (total - 1) % max_rows + 1
    assert int((tmp_path / COUNT).read_text().split()[0]) == len(current)
    kept = previous + current
    for tag in "ab":  # the rows lost to rotation are the oldest: each writer keeps an unbroken run to its end
        seqs = [int(r["text"].split()[1]) for r in kept if r["text"].split()[0] == tag]
        assert seqs == list(range(n - len(seqs), n))
        assert all(r["padding"] == "x" * (int(r["text"].split()[1]) % 97) for r in kept)


def test_a_full_disk_drops_and_counts_then_writing_resumes(tmp_path):
    (tmp_path / CURRENT).symlink_to("/dev/full")  # every write fails with ENOSPC
    counts = Counts()
    w = writer(tmp_path, counts)
    began = time.monotonic()
    w.offer([record(i) for i in range(5)])
    assert time.monotonic() - began < 0.05
    counts.wait(lambda c: c.dropped["disk"] == 5)
    assert counts.written == 0 and w.alive
    w.offer([record(5)])
    counts.wait(lambda c: c.dropped["disk"] == 6)
    assert w.alive

    (tmp_path / CURRENT).unlink()  # room again
    (tmp_path / CURRENT).write_bytes(b"")
    w.offer([record(i) for i in range(6, 9)])
    counts.wait(lambda c: c.written == 3)
    w.close()
    assert [r["text"] for r in strict_rows(tmp_path / CURRENT)] == ["text 6", "text 7", "text 8"]
    assert counts.dropped == Counter(disk=6)


def test_a_writer_that_falls_behind_drops_without_blocking(tmp_path, monkeypatch):
    entered, release = threading.Event(), threading.Event()
    real = capture.append_lines

    def stuck(*args, **kwargs):
        entered.set()
        release.wait(10)
        return real(*args, **kwargs)

    monkeypatch.setattr(capture, "append_lines", stuck)
    counts = Counts()
    w = writer(tmp_path, counts, queue_size=3)
    w.offer([record(0)])
    assert entered.wait(5)  # the thread holds record 0 and waits
    w.offer([record(i) for i in range(1, 4)])  # fills the queue
    began = time.monotonic()
    w.offer([record(i) for i in range(4, 9)])
    w.offer([record(9)])
    assert time.monotonic() - began < 0.05
    assert counts.dropped == Counter(queue=6)
    release.set()
    w.close()
    assert counts.written == 4 and counts.dropped == Counter(queue=6)
    assert [r["text"] for r in read_captures(tmp_path)] == [f"text {i}" for i in range(4)]
    w.offer([record(10)])  # after close: dropped, still no exception
    assert counts.dropped["closed"] == 1


def test_offer_never_raises_even_when_the_callbacks_do(tmp_path):
    def boom(*_):
        raise RuntimeError("metrics broke")

    w = CaptureWriter(tmp_path, 10, boom, boom, queue_size=1)
    w.offer([record(i) for i in range(50)] + [{"text": object()}])
    w.close()
    assert w.alive is False
    assert len(list(read_captures(tmp_path))) >= 1


def test_readers_skip_a_torn_last_line_and_the_next_writer_cuts_it(tmp_path):
    counts = Counts()
    w = writer(tmp_path, counts, max_rows=5)
    w.offer([record(i) for i in range(3)])
    w.close()
    with open(tmp_path / CURRENT, "ab") as f:  # a writer killed mid-write
        f.write(b'{"time": "2024-01-01T00:00:00+00:00", "text": "tor')
    assert [r["text"] for r in read_captures(tmp_path)] == ["text 0", "text 1", "text 2"]
    w = writer(tmp_path, counts, max_rows=5)
    w.offer([record(i) for i in range(3, 6)])
    w.close()
    assert [r["text"] for r in strict_rows(tmp_path / PREVIOUS)] == [f"text {i}" for i in range(5)]
    assert [r["text"] for r in strict_rows(tmp_path / CURRENT)] == ["text 5"]


# -- settings -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate, max_rows, setting", [
    (-0.1, 10, "capture_rate"),
    (1.5, 10, "capture_rate"),
    ("abc", 10, "capture_rate"),
    (float("nan"), 10, "capture_rate"),
    (True, 10, "capture_rate"),
    (0.5, 0, "capture_max_rows"),
    (0.5, 2.5, "capture_max_rows"),
    (0.5, "10", "capture_max_rows"),
])
def test_bad_settings_are_refused_by_name(tmp_path, rate, max_rows, setting):
    with pytest.raises(ValueError, match=setting):
        check_capture_settings(rate, max_rows, tmp_path)


def test_capture_dir_is_checked_when_capture_is_on(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="capture_dir.*not a folder"):
        check_capture_settings(0.1, 10, a_file)
    with pytest.raises(ValueError, match="capture_dir.*cannot be created"):
        check_capture_settings(0.1, 10, a_file / "below")
    with pytest.raises(ValueError, match="capture_dir is required"):
        check_capture_settings(0.1, 10, None)
    check_capture_settings(0, 10, None)  # off: no folder needed
    check_capture_settings(1, 10, tmp_path / "new" / "captures")  # made when missing
    assert (tmp_path / "new" / "captures").is_dir() and not any((tmp_path / "new" / "captures").iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0o500 folder anyway")
def test_an_unwritable_capture_dir_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    try:
        with pytest.raises(ValueError, match="capture_dir.*not writable"):
            check_capture_settings(0.5, 10, folder)
    finally:
        folder.chmod(0o700)


# -- export -> ingest -----------------------------------------------------------------------------------------


def as_ingest_reads(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def test_export_round_trips_hostile_texts_through_ingest(tmp_path, capsys):
    from continual.cli import main
    from continual.arrivals.split import read_split
    from continual.workspace.layout import Workspace

    root = tmp_path / "ws"
    assert main(["init", str(root)]) == 0
    texts = {  # text -> the prediction of its newest capture
        "line one\nline two": "pos",
        'she said "hi", then left, "twice"': "pos",
        "before\u2028after": "pos",
        "cp1252\u0085next": "pos",
        "emoji 😀👍🏽 family 👨‍👩‍👧": "pos",
        "RTL שלום עולם مرحبا بالعالم": "neg",
        "tab\tseparated": "neg",
        "  padded with spaces  ": "neg",
        "windows\r\nline end": "neg",
        "=HYPERLINK(\"http://x\")": "neg",
    }
    records = [record(i, text, label, confidence=0.5 + i / 40) for i, (text, label) in enumerate(texts.items())]
    records.insert(0, record(99, "line one\nline two", "neg", 0.99))  # an older capture: the newer one wins
    records += [record(100, "nul\0inside", "neg"), record(101, "lone \udc80", "neg"), record(102, "   ", "neg"),
                {"text": "no prediction"}]
    counts = Counts()
    w = writer(root / "captures", counts, max_rows=8)  # the default folder; two files after rotation
    w.offer(records)
    w.close()
    assert (root / PREVIOUS).exists() is False and (root / "captures" / PREVIOUS).exists()

    out = tmp_path / "to label.csv"
    capsys.readouterr()
    assert main(["-C", str(root), "capture", "export", str(out), "--keep-formulas"]) == 0  # exactly as captured
    printed = capsys.readouterr().out
    assert f"wrote {len(texts)} rows to {out}" in printed
    assert "capture.1.jsonl (8 rows)" in printed and "capture.jsonl (7 rows)" in printed
    assert "1 repeated texts" in printed and "malformed" in printed and "NUL" in printed
    assert "surrogate" in printed and "empty texts" in printed and "formula" in printed

    with out.open(newline="", encoding="utf-8") as f:
        exported = list(csv.DictReader(f))
    assert list(exported[0]) == ["text", "label", "prediction", "confidence", "model_version", "round_key",
                                 "last_captured", "times_captured"]
    assert [float(r["confidence"]) for r in exported] == sorted(float(r["confidence"]) for r in exported)
    assert {r["text"]: r["times_captured"] for r in exported}["line one\nline two"] == "2"

    assert main(["-C", str(root), "ingest", str(out), "--name", "captured"]) == 0
    ws = Workspace.at(root)
    key = ws.stream()[0]
    ingested = {r["text"]: r["label"] for split in ("train", "test") for r in read_split(ws, key, split)}
    assert ingested == {as_ingest_reads(text): label for text, label in texts.items()}
    assert "before\u2028after" in ingested and "cp1252\u0085next" in ingested

    # the confidence range
    assert main(["-C", str(root), "capture", "export", str(out), "--min-confidence", "0.6",
                 "--max-confidence", "0.7"]) == 0
    with out.open(newline="", encoding="utf-8") as f:
        assert all(0.6 <= float(r["confidence"]) <= 0.7 for r in csv.DictReader(f))
    assert main(["-C", str(root), "capture", "export", str(tmp_path / "x.jsonl")]) == 1
    assert main(["-C", str(root), "capture", "export", str(out), "--dir", str(tmp_path / "none")]) == 1


def test_export_neutralises_formulas_unless_asked_not_to(tmp_path, capsys):
    """Cells a spreadsheet would run (=, +, -, @, tab, CR first) get a leading '; plain numbers (a label -1) do not.
    --keep-formulas writes them as captured. The CSV is 0600, as the captures are."""
    from continual.cli import main

    root = tmp_path / "ws"
    assert main(["init", str(root)]) == 0
    texts = {"=cmd|' /C calc'!A0": "-1", "+1+1": "+1", "-2+3+cmd": "-1", "@SUM(A1:A2)": "+1", "-1 star, awful": "-1",
             "fine as it is": "+1", "=HYPERLINK(\"http://x\")": "@odd"}
    w = writer(root / "captures", Counts())
    w.offer([record(i, text, label) for i, (text, label) in enumerate(texts.items())])
    w.close()
    out = tmp_path / "to label.csv"
    old = os.umask(0o022)
    try:
        assert main(["-C", str(root), "capture", "export", str(out)]) == 0
    finally:
        os.umask(old)
    assert "written with a leading '" in capsys.readouterr().out
    assert oct(out.stat().st_mode & 0o777) == oct(0o600)
    with out.open(newline="", encoding="utf-8") as f:
        rows = {r["text"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"'" + t if t[0] in "=+-@" else t for t in texts}
    assert rows["fine as it is"]["label"] == "+1" and rows["'-1 star, awful"]["label"] == "-1"  # numbers stay
    assert rows["'=HYPERLINK(\"http://x\")"]["label"] == rows["'=HYPERLINK(\"http://x\")"]["prediction"] == "'@odd"
    for row in rows.values():
        assert all(not cell.startswith(("=", "+", "@", "\t", "\r")) or cell == "+1" for cell in row.values())

    assert main(["-C", str(root), "capture", "export", str(out), "--keep-formulas"]) == 0
    with out.open(newline="", encoding="utf-8") as f:
        assert {r["text"]: r["label"] for r in csv.DictReader(f)} == texts


def test_continual_serve_passes_the_capture_settings_from_params(tmp_path):
    from continual.cli.serving import monitoring_settings
    from continual.params import load_params
    from continual.workspace.layout import Workspace

    params = load_params()
    params["monitoring"]["capture"].update(rate=0.5, max_bytes=65536, anonymous=True)
    settings = monitoring_settings(Workspace.at(tmp_path), params)
    assert (settings["capture_max_bytes"], settings["capture_anonymous"]) == (65536, True)
    from service.config import ServiceConfig, load_config

    assert load_config({}, environ={}).capture_max_bytes == load_params()["monitoring"]["capture"]["max_bytes"] \
        == ServiceConfig.capture_max_bytes
    assert load_config({}, environ={}).capture_anonymous is load_params()["monitoring"]["capture"]["anonymous"] is False


@pytest.mark.slow
def folder_bytes(folder: Path) -> int:
    """Bytes in ``folder`` now; a file rotated away between the listing and its stat counts for nothing."""
    total = 0
    for path in folder.iterdir():
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            continue
    return total


def test_a_flood_of_anonymous_long_texts_stays_under_the_byte_cap(onnx_model_dir, tmp_path):
    """Two gunicorn workers writing to one capture folder (capture_anonymous on, every text sampled), 240 texts of
    10,000 characters: the folder never holds more than 2 x capture_max_bytes."""
    from serving import gunicorn_server

    captures, max_bytes = tmp_path / "captures", 65536
    args = ["--model-uri", str(onnx_model_dir), "--workers", "2", "--threads", "2", "--set", "compute_threads=1",
            "--set", "capture_rate=1", "--set", "capture_anonymous=true", "--set", f"capture_max_bytes={max_bytes}",
            "--set", f"capture_dir={captures}", "--set", "monitoring_interval_s=3600", "--set", "max_length=16"]
    with gunicorn_server(args, tmp_path) as server:
        import requests

        biggest = 0
        for i in range(30):
            texts = [f"{i}-{j} " + "é" * 9990 for j in range(8)]  # each row \u-escaped: 60 KB, nearly the cap
            assert requests.post(f"{server['base']}/predict", json={"texts": texts}, timeout=30).status_code == 200
            biggest = max(biggest, folder_bytes(captures))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            exposition = requests.get(f"{server['base']}/metrics", timeout=10).text
            if "continual_capture_rows_total" in exposition and \
                    sum(float(line.split()[-1]) for line in exposition.splitlines()
                        if line.startswith("continual_capture_rows_total")) >= 1:
                break
            time.sleep(0.2)
        biggest = max(biggest, folder_bytes(captures))
    assert biggest <= 2 * max_bytes + 64
    assert len(list(read_captures(captures))) >= 1
