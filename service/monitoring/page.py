"""The status page: GET / for a browser. One self-contained HTML page drawn from the monitor's snapshot.

Nothing is loaded from anywhere (the page is served under ``default-src 'none'``): the style is inline, the
charts are inline SVG drawn in ``service.monitoring.svg``, and the one script, allowed by its sha256 hash, only
refreshes the counters from ``/monitoring``. Every string from the snapshot is escaped: label and arrival names may
hold anything.
"""
from __future__ import annotations

import base64
import hashlib
import time
from html import escape
from urllib.parse import quote
from typing import Any

from service.monitoring.svg import Series, heatmap, line_chart, number

DASH = "\u2014"
CHECK_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
CHECK_NAMES = {"embedding_auc": "embedding AUC", "label_psi": "label PSI", "length_psi": "length PSI",
               "confidence_drop": "confidence drop"}

STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:16px 24px;color:#222}
h1{font-size:22px;margin:0 0 12px}h2{font-size:17px;margin:24px 0 8px;border-bottom:1px solid #ddd}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:16px;align-items:start}
svg{max-width:100%;height:auto;display:block}figure{margin:12px 0 0}figcaption{margin-bottom:4px}
table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
td.n{text-align:right}.note{color:#666}.drift{color:#b00;font-weight:600}.ok{color:#070}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:0}dt{color:#666}dd{margin:0}"""

# Refreshes the counters only; everything else is a snapshot of when the page was drawn. It never throws.
SCRIPT = """(function () {
var cells = document.querySelectorAll('[data-counter]'), updated = document.querySelector('[data-updated]');
function show(c) {
  if (updated) updated.textContent = ', last at ' + new Date().toLocaleTimeString();
  cells.forEach(function (cell) {
    var key = cell.getAttribute('data-counter');
    var value = key === 'predictions' ? (c.predictions || {})[cell.getAttribute('data-label')] : c[key];
    if (typeof value === 'number') cell.textContent = String(value);
  });
}
function refresh() {
  try {
    fetch('/monitoring' + location.search, {headers: {Accept: 'application/json'}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) { if (s && s.counters) show(s.counters); })
      .catch(function () {});
  } catch (e) {}
}
setInterval(refresh, 5000);
})();"""
# The one script runs by its hash: an injected <script> (or event handler) would not. No page may frame this one.
SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode("ascii")
CONTENT_SECURITY_POLICY = (f"default-src 'none'; style-src 'unsafe-inline'; script-src '{SCRIPT_HASH}'; "
                           "connect-src 'self'; img-src data:; frame-ancestors 'none'; base-uri 'none'; "
                           "form-action 'none'")


def render(snapshot: dict[str, Any]) -> str:
    """The whole page for one snapshot (see service.monitoring.monitor for its shape; GET /monitoring adds ``models``,
    every served model's name, and ``model_name``, this one's)."""
    sections = [_selector(snapshot.get("models") or [], snapshot.get("model_name")), _champion(snapshot.get("model")),
                _lineage(snapshot.get("lineage")), _drift(snapshot),
                _counters(snapshot.get("counters") or {}, snapshot.get("capture") or {})]
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            '<link rel="icon" href="data:,"><title>continual model server: status</title>'
            f"<style>{STYLE}</style></head><body><h1>continual model server</h1>{''.join(sections)}"
            f"<script>{SCRIPT}</script></body></html>\n")


def _text(value: object) -> str:
    return DASH if value is None or value == "" else f"<bdi>{escape(str(value))}</bdi>"


def _selector(names: list[str], current: str | None) -> str:
    """Links to the other models' pages, when the server serves several (the counters script keeps ?model=)."""
    if len(names) < 2:
        return ""
    links = [f"<strong>{_text(name)}</strong>" if name == current
             else f'<a href="?model={quote(str(name), safe="")}">{_text(name)}</a>' for name in names]
    return f'<p class="models">Models: {" | ".join(links)}</p>'


def _champion(model: dict[str, Any] | None) -> str:
    if not model:
        return '<h2>Champion</h2><p class="note">no model loaded</p>'
    rows = [("model", model.get("name")), ("version", model.get("version")), ("round", model.get("round")),
            ("arrival", model.get("arrival")), ("backend", model.get("backend"))]
    return "<h2>Champion</h2><dl>" + "".join(f"<dt>{k}</dt><dd>{_text(v)}</dd>" for k, v in rows) + "</dl>"


def _lineage(lineage: dict[str, Any] | None) -> str:
    lineage = lineage or {}
    arrivals = [str(a) for a in lineage.get("arrivals") or []]
    matrix = lineage.get("accuracy_matrix") or []
    forgetting = lineage.get("forgetting") or []
    points = [(float(i + 1), number(f)) for i, f in enumerate(forgetting)]
    curve = line_chart("forgetting", "average forgetting after each round",
                       [Series("forgetting", CHECK_COLOURS[1], points)], lambda x: f"round {x:.0f}",
                       "no lineage: the model carries no accuracy matrix", y_floor=0.05, width=480, height=200,
                       x_ticks=[x for x, _ in points][:: max(1, len(points) // 8)])
    grid = heatmap("accuracy-heatmap", arrivals, matrix, "no lineage: the model carries no accuracy matrix")
    return (f'<h2>Lineage</h2><div class="grid"><figure><figcaption>Accuracy on each arrival after each round'
            f'</figcaption>{grid}</figure><figure><figcaption>Forgetting per round</figcaption>{curve}</figure></div>')


def _drift(snapshot: dict[str, Any]) -> str:
    thresholds = snapshot.get("thresholds") or {}
    history = snapshot.get("history") or []
    latest = snapshot.get("latest")
    checks = list(dict.fromkeys([*thresholds, *((latest or {}).get("scores") or {})]))
    series = [Series(CHECK_NAMES.get(c, c), CHECK_COLOURS[k % len(CHECK_COLOURS)],
                     [(float(h.get("time") or 0), (h.get("scores") or {}).get(c)) for h in history],
                     thresholds.get(c)) for k, c in enumerate(checks)]
    chart = line_chart("drift", "drift scores over time; dashed: each check's threshold", series,
                       lambda t: time.strftime("%H:%M:%S UTC", time.gmtime(t)), "no drift check yet", width=720)
    notes = []
    if not snapshot.get("monitoring"):
        notes.append("Monitoring is off on this server.")
    if snapshot.get("reference") is None:
        notes.append("This model has no reference (it was exported before monitoring), so the embedding and "
                     "label checks are unavailable.")
    legend = "".join(f'<span style="color:{s.colour}">\u25a0</span> {escape(s.name)} ' for s in series)
    return (f"<h2>Drift</h2>{''.join(f'<p class=note>{n}</p>' for n in notes)}"
            f"{_latest(latest, checks, thresholds, snapshot.get('window') or {})}"
            f"<figure><figcaption>Scores over time (dashed: thresholds) {legend}</figcaption>{chart}</figure>")


def _latest(latest: dict[str, Any] | None, checks: list[str], thresholds: dict[str, Any],
            window: dict[str, Any]) -> str:
    if not latest:
        return (f'<p class="note">no drift check yet (window: {_count(window.get("texts"))} of '
                f'{_count(window.get("capacity"))} texts{_across(window.get("workers"))})</p>')
    scores, drift = latest.get("scores") or {}, latest.get("drift") or {}
    rows = []
    for check in checks:
        score, limit = number(scores.get(check)), number(thresholds.get(check))
        verdict = drift.get(check)
        rows.append(f"<tr><td>{escape(CHECK_NAMES.get(check, check))}</td>"
                    f'<td class="n">{"unavailable" if score is None else f"{score:.3f}"}</td>'
                    f'<td class="n">{DASH if limit is None else f"{limit:g}"}</td>'
                    + ('<td class="drift">yes</td>' if verdict is True else '<td class="ok">no</td>'
                       if verdict is False else f"<td>{DASH}</td>") + "</tr>")
    when = number(latest.get("time"))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when)) if when is not None else DASH
    return (f'<p>Latest check: {stamp}, over {_count(latest.get("texts"))} texts from '
            f'{_workers(latest.get("workers", 1))}</p><table><tr><th>check</th>'
            f'<th>score</th><th>threshold</th><th>drift</th></tr>{"".join(rows)}</table>')


def _across(workers: object) -> str:
    return f" across {_workers(workers)}" if number(workers) is not None and number(workers) > 1 else ""


def _workers(value: object) -> str:
    count = _count(value)
    return f"{count} worker" + ("" if count == "1" else "s")


def _count(value: object) -> str:
    return str(int(value)) if number(value) is not None else DASH


def _counters(counters: dict[str, Any], capture: dict[str, Any]) -> str:
    def cell(key: str, label: str = "") -> str:
        attribute = f' data-label="{escape(label)}"' if label else ""
        value = (counters.get("predictions") or {}).get(label) if label else counters.get(key)
        return f'<td class="n" data-counter="{key}"{attribute}>{_count(value)}</td>'

    rows = [("requests", "requests"), ("texts", "texts"), ("errors", "errors"), ("captured", "captured texts"),
            ("capture_dropped", "captures dropped")]
    body = "".join(f"<tr><th>{name}</th>{cell(key)}</tr>" for key, name in rows)
    body += "".join(f"<tr><th>predicted {_text(label)}</th>{cell('predictions', str(label))}</tr>"
                    for label in (counters.get("predictions") or {}))
    rate = number(capture.get("rate"))
    state = f"on, {rate:.1%} of texts" if capture.get("enabled") and rate is not None else (
        "on" if capture.get("enabled") else "off")
    return (f'<h2>Live counters</h2><p class="note">Refreshed every 5 s<span data-updated></span></p>'
            f'<table>{body}</table><p class="note">Capture: {state}</p>')
