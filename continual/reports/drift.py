"""`continual drift`: a window's drift scores against the champion's reference, printed and drawn as an HTML report.

Two sources of a window:
- a running server (``--url``): its latest check, history and counters, from GET /monitoring;
- a file of texts (``--texts``: a CSV or JSONL with a text column, or the server's capture.jsonl): the model the
  registry alias points at (or ``--model-uri``) classifies them here, and one check scores them, exactly as the
  server's monitor would (``service.monitoring``). No server and no Prometheus needed.
"""
from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path
from typing import Any

import requests

from service.monitoring.page import render
from service.monitoring.scores import CHECKS


def fetch_snapshot(url: str, model: str | None = None, timeout_s: float = 10.0) -> dict[str, Any]:
    """The server's GET /monitoring: of ``model`` when it serves several, else of its first."""
    try:
        response = requests.get(url.rstrip("/") + "/monitoring", params={"model": model} if model else None,
                                timeout=timeout_s, headers={"Accept": "application/json"})
    except requests.RequestException as error:
        raise ConnectionError(f"cannot reach the model server at {url}: {error}") from None
    if response.status_code != 200:
        raise ConnectionError(f"{url}/monitoring answered {response.status_code}: {response.text[:200]}")
    return response.json()


def read_texts(path: Path) -> list[str]:
    """Texts of a CSV (column ``text``) or JSONL (key ``text``) file; a capture file is JSONL."""
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            if "text" not in (reader.fieldnames or []):
                raise ValueError(f"{path}: no 'text' column (columns: {', '.join(reader.fieldnames or [])})")
            return [row["text"] for row in reader]
    texts = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):  # iterate the file: splitlines() would split texts on U+2028
            if line.strip():
                try:
                    texts.append(json.loads(line)["text"])
                except (ValueError, KeyError, TypeError):
                    raise ValueError(f"{path}, line {number}: not a JSON object with a 'text' string") from None
    return texts


def score_texts(model_uri: str, texts: list[str], settings: dict[str, Any]) -> dict[str, Any]:
    """Classify ``texts`` with the model at ``model_uri`` and score them as one window; the monitor's snapshot."""
    from service import create_app
    from service.app import shutdown
    from service.model_holder import ReloadFailed
    from service.state import EXTENSION_KEY

    if len(texts) < 2:
        raise ValueError(f"a window needs at least 2 texts, got {len(texts)}")
    config = {**settings, "model_uri": model_uri, "batching": False, "monitoring": True,
              "monitoring_window": len(texts), "monitoring_min_texts": 2, "capture_rate": 0.0, "capture_dir": None,
              "max_text_chars": max(map(len, texts), default=1)}
    try:
        app = create_app(config)
    except ReloadFailed as error:
        raise ValueError(f"cannot load the model {model_uri}: {error}") from None
    try:
        state = app.extensions[EXTENSION_KEY]
        model = state.serving_model()
        for start in range(0, len(texts), 256):
            state.classify(model, texts[start:start + 256])
        state.monitor.check()
        return state.monitor.snapshot()
    finally:
        shutdown(app)


def format_scores(snapshot: dict[str, Any]) -> str:
    latest, thresholds = snapshot.get("latest"), snapshot.get("thresholds") or {}
    model = snapshot.get("model") or {}
    head = f"model {model.get('name')} version {model.get('version')} (round {model.get('round_key')})"
    if snapshot.get("reference") is None:
        head += "\n  this model has no reference (written before monitoring): only counters are available"
    if latest is None:
        window = snapshot.get("window") or {}
        return f"{head}\nno drift check yet: the window holds {window.get('texts')} of {window.get('capacity')} texts"
    lines = [head, f"window: {latest['texts']} texts", f"{'check':<18}{'score':>9}{'threshold':>11}  drift"]
    for check in CHECKS:
        score = latest["scores"].get(check)
        shown = "n/a" if score is None else f"{score:.3f}"
        lines.append(f"{check:<18}{shown:>9}{thresholds.get(check, float('nan')):>11.3f}  "
                     f"{'YES' if latest['drift'].get(check) else 'no'}")
    return "\n".join(lines)


def write_report(snapshot: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, delete=False, suffix=".tmp") as f:
        f.write(render(snapshot))
    Path(f.name).replace(path)
    return path
