"""`continual ui`: the view users want first, every lineage's forgetting and average accuracy against round with
the strategies side by side, as ``reports/compare.html``; and MLflow's own UI on the workspace's store beside it.

MLflow's experiment page cannot be told from the API which charts to show (mlflow/mlflow#9604) and ``mlflow ui``
opens on its GenAI home, so the page is built here from the lineage runs' metric histories (one point per round,
as the track stage logs them) and links every lineage to its run in the MLflow UI. It loads nothing: the charts
are inline SVG drawn by the status page's own ``service.monitoring.svg``.
"""
from __future__ import annotations

import html
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from service.monitoring.svg import Series, line_chart

from continual.registry.connect import connect
from continual.registry.tags import KIND_TAG, STRATEGY_TAG
from continual.workspace.layout import Workspace

if TYPE_CHECKING:
    from mlflow import MlflowClient

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")
CHARTS = (("forgetting.avg", "average forgetting after each round (lower is better)", 0.05),
          ("avg_acc", "average accuracy over every arrival so far", 1.0),
          ("wall_seconds", "seconds per round", 1.0))


@dataclass
class Lineage:
    name: str        # strategy:params-hash, the lineage run's name
    strategy: str
    run_id: str
    history: dict[str, list[tuple[int, float]]]  # metric -> (round, value), by round

    def last(self, metric: str) -> float | None:
        points = self.history.get(metric) or []
        return points[-1][1] if points else None


def read_lineages(client: "MlflowClient", experiment_id: str) -> list[Lineage]:
    runs = client.search_runs([experiment_id], f"tags.`{KIND_TAG}` = 'lineage'", max_results=500,
                              order_by=["attributes.start_time ASC"])
    lineages = []
    for run in runs:
        history = {metric: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, metric))
                   for metric, _, _ in CHARTS}
        lineages.append(Lineage(run.info.run_name or run.info.run_id, run.data.tags.get(STRATEGY_TAG, "?"),
                                run.info.run_id, history))
    return lineages


def without_credentials(url: str) -> str:
    """The tracking server's address as a page may show it: no user or password."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    return urlunsplit(parts._replace(netloc=netloc + (f":{parts.port}" if parts.port else ""))).rstrip("/")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def render(lineages: list[Lineage], experiment_id: str, mlflow_url: str | None) -> str:
    series = {metric: [Series(lin.name, COLOURS[k % len(COLOURS)], lin.history[metric])
                       for k, lin in enumerate(lineages)] for metric, _, _ in CHARTS}
    rounds = sorted({step for lin in lineages for points in lin.history.values() for step, _ in points})
    charts = "".join(
        f"<figure><figcaption>{html.escape(title)}</figcaption>"
        + line_chart(metric.replace(".", "-"), title, series[metric], lambda x: f"round {x:.0f}",
                     "no lineage has logged a round yet", y_floor=floor, x_ticks=rounds) + "</figure>"
        for metric, title, floor in CHARTS)

    def link(lin: Lineage) -> str:
        name = html.escape(lin.name)
        if not mlflow_url:
            return name
        return f'<a href="{html.escape(mlflow_url)}/#/experiments/{experiment_id}/runs/{lin.run_id}">{name}</a>'

    legend = "".join(f'<li><span style="color:{COLOURS[k % len(COLOURS)]}">&#9632;</span> {link(lin)}</li>'
                     for k, lin in enumerate(lineages))
    rows = "".join(
        f"<tr><td>{link(lin)}</td><td>{html.escape(lin.strategy)}</td><td>{len(lin.history['avg_acc'])}</td>"
        f"<td>{_fmt(lin.last('avg_acc'))}</td><td>{_fmt(lin.last('forgetting.avg'))}</td>"
        f"<td>{_fmt(sum(v for _, v in lin.history['wall_seconds']), 1)}</td></tr>" for lin in lineages)
    mlflow = (f'<p>Everything else (parameters, every metric, models): <a href="{html.escape(mlflow_url)}/#/experiments/'
              f'{experiment_id}/runs?compareRunsMode=CHART">the experiment in MLflow</a>.</p>' if mlflow_url else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>continual: forgetting by lineage</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }}
.charts {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr)); gap: 1em; }}
figure {{ margin: 0; }} figcaption {{ font-weight: 600; }} svg {{ width: 100%; height: auto; }}
svg text {{ font-size: 11px; fill: #444; }}
ul.legend {{ list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 0 1.5em; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 0.2em 0.8em; border-bottom: 1px solid #ddd; text-align: left; }}
</style></head><body>
<h1>Forgetting against round, every lineage</h1>
<ul class="legend">{legend}</ul>
<div class="charts">{charts}</div>
<h2>After the last round</h2>
<table><tr><th>lineage</th><th>strategy</th><th>rounds</th><th>average accuracy</th><th>average forgetting</th>
<th>seconds, whole stream</th></tr>{rows}</table>
{mlflow}
</body></html>
"""


def write_report(ws: Workspace, params: dict, mlflow_url: str | None) -> tuple[Path, int]:
    """reports/compare.html from the workspace's tracking store: its path and the number of lineages drawn."""
    client, experiment_id = connect(ws, params)
    lineages = read_lineages(client, experiment_id)
    path = ws.reports_dir / "compare.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(".compare.html.partial")
    partial.write_text(render(lineages, experiment_id, mlflow_url), encoding="utf-8")
    partial.replace(path)
    return path, len(lineages)


def start_mlflow_ui(uri: str, port: int, timeout_s: float = 180) -> subprocess.Popen:
    """``mlflow ui`` on 127.0.0.1 for this store, once it answers; raises RuntimeError if it never does."""
    import requests

    # its log goes to stderr: stdout keeps the two lines that say where to look. One worker serves one
    # person's browser and starts in a quarter of the time of mlflow's default four.
    process = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                                "--registry-store-uri", uri, "--host", "127.0.0.1", "--port", str(port),
                                "--workers", "1"],
                               stdin=subprocess.DEVNULL, stdout=sys.stderr)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow ui exited with {process.returncode} (is port {port} taken? use --port)")
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).ok:
                return process
        except requests.RequestException:
            pass
        time.sleep(0.5)
    process.terminate()
    raise RuntimeError(f"mlflow ui did not answer on port {port} within {timeout_s:.0f} s")
