"""Disk per round under `dvc repro`: full fine-tuning against LoRA rounds, in two real workspaces.

    python benchmarks/storage.py                 # MiniLM, VADER's four domains, 100 examples each, 1 epoch
    python benchmarks/storage.py --quick         # the tiny random model

Each workspace runs the demo flow (`continual ingest` then `dvc repro`, four times) with the shipped params
except model.adapter, demo.per_domain and train.epochs (a round's bytes do not depend on how long it
trained). Reports, per round: the round folder, its model weights, what its output added to the DVC cache
(`continual status`'s storage table, continual/workspace/storage.py), and the MLflow artifact store's growth (the
registered model version: a merged full model for both kinds, so that serving stays one plain model).
"""
from __future__ import annotations

import io
import shutil
import sys
from contextlib import redirect_stdout
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402


def measure(folder: Path, adapter: str, per_domain: int, base: str) -> dict:
    from continual.cli.demo import run_demo
    from continual.workspace.storage import cache_total, stream_bytes, tree_bytes
    from continual.workspace.create import create_workspace
    from continual.workspace.layout import Workspace

    shutil.rmtree(folder, ignore_errors=True)
    ws = create_workspace(folder)
    params = yaml.safe_load(ws.params_file.read_text())
    params["model"].update(base=base, adapter=adapter)
    params["demo"]["per_domain"] = per_domain
    params["train"]["epochs"] = 1
    ws.params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    with redirect_stdout(io.StringIO()):  # the demo's own tables; this script prints its own
        run_demo(folder)
    ws = Workspace.at(folder)
    rows = stream_bytes(ws)
    return {"adapter": adapter, "rounds": [row.__dict__ for row in rows], "cache_total": cache_total(ws),
            "mlartifacts": tree_bytes(folder / "mlartifacts")}


def main() -> None:
    parser = harness.arguments(__doc__)
    parser.add_argument("--per-domain", type=int, default=None)
    args = parser.parse_args()
    out = harness.prepare(args)
    work = harness.ROOT / "bench" / "work" / f"storage-{'quick' if args.quick else 'full'}"
    base = "minilm"
    if args.quick:
        from continual.model.encoder import make_tiny_model

        base = str(make_tiny_model(work / "tiny-model", ["neg", "neu", "pos"]))
    per_domain = args.per_domain or (20 if args.quick else 100)
    print(f"machine: {harness.describe(harness.machine())}\ncommand: {harness.command_line()}\n", flush=True)
    results = [measure(work / adapter, adapter, per_domain, args.base or base) for adapter in ("none", "lora")]
    harness.write_json(out, "storage", {"per_domain": per_domain, "results": results})
    print(report(results))


def report(results: list[dict]) -> str:
    from continual.workspace.storage import human

    full, lora = results
    rows = []
    for a, b in zip(full["rounds"], lora["rounds"]):
        rows.append([a["key"], human(a["folder"]), human(b["folder"]), f"1/{a['folder'] / b['folder']:.0f}",
                     human(a["weights"]), human(b["weights"]), human(a["cache_added"]), human(b["cache_added"])])
    total = lambda r, k: sum(x[k] or 0 for x in r["rounds"])  # noqa: E731
    rows.append(["stream", human(total(full, "folder")), human(total(lora, "folder")),
                 f"1/{total(full, 'folder') / total(lora, 'folder'):.0f}", "", "",
                 human(total(full, "cache_added")), human(total(lora, "cache_added"))])
    table = harness.markdown_table(["round", "folder (full)", "folder (lora)", "lora / full", "weights (full)",
                                    "weights (lora)", "DVC cache + (full)", "DVC cache + (lora)"], rows)
    return (f"{table}\n\nDVC cache in all: {human(full['cache_total'])} (full), {human(lora['cache_total'])} (lora); "
            f"MLflow artifacts (registered merged models, plots): {human(full['mlartifacts'])} (full), "
            f"{human(lora['mlartifacts'])} (lora)\n")


if __name__ == "__main__":
    main()
