"""The status page of a served VADER round-1 champion as traffic drifts, in headless Chromium: docs/img/status_page.png.

    python benchmarks/drift.py                       # trains the round this serves (bench/full/drift_work)
    python benchmarks/status_screenshot.py

The round's model folder is served under gunicorn on loopback with a check every 2 s; unseen tweets (its own
domain) are sent first, then movie reviews (a later domain), 500 each in requests of 10, so the drift chart shows
the window moving from one to the other. Then the page is loaded in Chromium (tests/browser.py), console errors
are counted and the screenshot is saved.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests")]

from browser import load_page  # noqa: E402
from serving import gunicorn_server  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "bench/full/drift_work/vader/rounds/0001-tweets")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/img/status_page.png")
    args = parser.parse_args()
    from continual.cli.demo import sample_domain
    from streams import SPLIT_SEED

    texts = {domain: [r["text"] for r in sample_domain(domain, 0, SPLIT_SEED)[500:]] for domain in ("tweets", "movies")}
    for domain, rows in texts.items():
        random.Random(0).shuffle(rows)
    with tempfile.TemporaryDirectory() as tmp:
        serve = ["--model-uri", str(args.model), "--workers", "1", "--set", "monitoring_interval_s=2"]
        with gunicorn_server(serve, Path(tmp)) as server:
            base = server["base"]
            for domain in ("tweets", "movies"):
                for start in range(0, 500, 10):
                    requests.post(f"{base}/predict", json={"texts": texts[domain][start:start + 10]},
                                  timeout=30).raise_for_status()
                    time.sleep(0.05)
                print(f"sent 500 {domain}", flush=True)
                time.sleep(5)  # two more checks on the full window
            snapshot = requests.get(f"{base}/monitoring", timeout=10).json()
            result = load_page(base + "/", screenshot=args.out, width=1280, height=1000)
    print({check: round(score, 3) for check, score in snapshot["latest"]["scores"].items()})
    print(f"console errors: {len(result.console_errors)}; wrote {args.out}")
    return 1 if result.console_errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
