"""Training throughput of a round's trainer against a plain PyTorch loop, and what EWC and replay add.

    python benchmarks/trainer_speed.py --quick
    python benchmarks/trainer_speed.py                 # MiniLM, sizes from benchmarks/params.yaml

Same model (reloaded from one saved initial state before every run), same VADER rows, same batch size,
dynamic padding (continual.model.data.PadCollate), AdamW with the same linear warm-up schedule, one epoch each:

- ours: continual.model.trainer.train_one_experience with no plugins (the `naive` strategy), as run_round calls it;
- plain: a hand-written loop over a torch DataLoader.

The two alternate (ours first, then plain first) `repeats` times each, and the ratio of median throughputs is
reported; the target is ours >= 0.95x plain. Measured in the same runs of ours: the EWC Fisher pass (Avalanche's
EWCPlugin after the epoch) and the replay overhead (a buffer of `mem_size` other rows restored as a round
restores it), each as a fraction of one naive epoch. Writes trainer_speed.json under --out.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

LABELS = ["neg", "neu", "pos"]


def main() -> None:
    parser = harness.arguments(__doc__)
    parser.add_argument("--examples", type=int, help="train rows in the measured epoch")
    parser.add_argument("--repeats", type=int, help="runs of each variant")
    parser.add_argument("--mem-size", type=int, help="replay buffer size (default: examples / 2)")
    args = parser.parse_args()
    out = harness.prepare(args)
    bench = harness.settings(args, "trainer_speed")
    n, repeats = args.examples or bench["examples"], args.repeats or bench["repeats"]
    work = harness.ROOT / "bench" / "work" / f"trainer-speed-{bench['mode']}"
    params = harness.training_params(args, bench, work)
    train = {**params["train"], "epochs": 1}
    print(f"machine: {harness.describe(harness.machine())}\ncommand: {harness.command_line()}\n", flush=True)

    from continual.cli.demo import sample_domain
    from continual.model.encoder import new_classifier
    from continual.model.pretrained import base_model_path

    pool = [r for d in ("tweets", "amazon") for r in sample_domain(d, n, 7)]
    rows, buffer_rows = pool[::2][:n], pool[1::2][: args.mem_size or n // 2]
    init = work / "init"
    model, tokenizer = new_classifier(base_model_path(params["model"]["base"]), LABELS,
                                      int(params["model"]["max_length"]))
    model.save(init)
    tokenizer.save_pretrained(init)
    runner = Runner(init, rows, buffer_rows, train, int(params["model"]["max_length"]), work, params)

    runner.ours()  # warm-up, not measured: first calls allocate, JIT-select kernels, fill caches
    runner.plain()
    samples: dict[str, list[dict]] = {"ours": [], "plain": [], "ewc": [], "replay": [], "replay_ewc": []}
    for i in range(repeats):
        order = ("ours", "plain", "ewc", "replay", "replay_ewc") if i % 2 == 0 else \
            ("plain", "ours", "replay_ewc", "replay", "ewc")
        for name in order:
            samples[name].append(getattr(runner, name)())
            print(f"-- {name}: {samples[name][-1]}", file=sys.stderr, flush=True)

    result = {"mode": bench["mode"], "model": params["model"]["base"], "train": train, "examples": len(rows),
              "buffer": len(buffer_rows), "repeats": repeats, "samples": samples, "summary": summarise(samples)}
    print(report(result), flush=True)
    harness.write_json(out, "trainer_speed", result)


class Runner:
    """Each method trains one epoch from the same saved initial model and returns its timings."""

    def __init__(self, init: Path, rows: list[dict], buffer_rows: list[dict], train: dict, max_length: int,
                 work: Path, params: dict):
        self.init, self.rows, self.buffer_rows, self.train, self.max_length = init, rows, buffer_rows, train, max_length
        self.work, self.params = work, params

    def _fresh(self):
        from continual.model.encoder import LogitsOnly, load_classifier
        from continual.strategies import RoundContext

        model, tokenizer = load_classifier(self.init)
        context = RoundContext(tokenizer, model.label2id, self.max_length)
        return LogitsOnly(model, tokenizer.pad_token_id), context

    def _ours(self, plugins: list, context, wrapped, dataset, past_rounds: int = 0) -> dict:
        from continual.model.trainer import train_one_experience

        steps = -(-len(self.rows) // int(self.train["batch_size"]))
        started = time.perf_counter()
        progress = train_one_experience(wrapped, dataset, self.train, plugins, steps, past_rounds, desc="bench")
        total = time.perf_counter() - started
        # progress.closing_seconds: from the last epoch's end to the end of the plugins' after-training work
        return {"seconds": total, "epoch_seconds": progress.seconds, "after_epoch_seconds": progress.closing_seconds,
                "examples": progress.examples, "new_examples": len(self.rows),
                "examples_per_s": len(self.rows) / total,
                "processed_per_s": progress.examples / total,  # replayed rows included
                "processed_per_epoch_s": progress.examples / progress.seconds}

    def ours(self) -> dict:
        wrapped, context = self._fresh()
        return self._ours([], context, wrapped, context.dataset(self.rows))

    def ewc(self) -> dict:
        from continual.strategies import make_strategy

        wrapped, context = self._fresh()
        strategy = make_strategy({**self.params, "strategy": {**self.params["strategy"], "name": "ewc"}})
        return self._ours(strategy.plugins(), context, wrapped, context.dataset(self.rows))

    def replay(self, name: str = "replay") -> dict:
        """A round restores the buffer from the previous round's buffer.jsonl: so does this. ``replay+ewc`` also
        restores EWC's importance from an earlier EWC epoch, so its penalty binds as in a second round."""
        from continual.strategies import make_strategy
        from continual.strategies.replay import BUFFER_FILE

        wrapped, context = self._fresh()
        cfg = {**self.params["strategy"], "name": name,
               "replay": {**self.params["strategy"]["replay"], "mem_size": len(self.buffer_rows)}}
        strategy = make_strategy({**self.params, "strategy": cfg})
        folder = self.work / "previous-round"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / BUFFER_FILE).write_text("".join(json.dumps({**r, "arrival": "0001-old", "weight": 0.5}) + "\n"
                                                  for r in self.buffer_rows))
        past = 0
        if name == "replay+ewc":
            self._previous_ewc(folder)
            past = 1
        dataset = context.dataset(self.rows)
        strategy.restore(folder, context, wrapped)
        return self._ours(strategy.plugins(), context, wrapped, dataset, past)

    def replay_ewc(self) -> dict:
        return self.replay("replay+ewc")

    def _previous_ewc(self, folder: Path) -> None:
        """ewc.safetensors and round.json of a first round, once: what a second round's EWC restores."""
        from continual.strategies import make_strategy

        if (folder / "round.json").exists():
            return
        wrapped, context = self._fresh()
        strategy = make_strategy({**self.params, "strategy": {**self.params["strategy"], "name": "ewc"}})
        self._ours(strategy.plugins(), context, wrapped, context.dataset(self.rows))
        strategy.save(folder, context)
        (folder / "round.json").write_text(json.dumps({"index": 1}))

    def plain(self) -> dict:
        """The loop one would write by hand: DataLoader with dynamic padding, AdamW, linear warm-up."""
        import torch
        from torch.utils.data import DataLoader
        from transformers import get_linear_schedule_with_warmup

        from continual.model.data import PadCollate, TokenizedRows

        wrapped, context = self._fresh()
        model = wrapped.model
        data = TokenizedRows(self.rows, context.tokenizer, context.label2id, self.max_length)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        started = time.perf_counter()
        model.to(device).train()
        loader = DataLoader(data, batch_size=int(self.train["batch_size"]), shuffle=True,
                            collate_fn=PadCollate(context.tokenizer.pad_token_id))
        optimizer = torch.optim.AdamW(model.parameters(), lr=float(self.train["lr"]),
                                      weight_decay=float(self.train["weight_decay"]))
        schedule = get_linear_schedule_with_warmup(optimizer, int(float(self.train["warmup_ratio"]) * len(loader)),
                                                   len(loader))
        loss_fn = torch.nn.CrossEntropyLoss()
        pad = context.tokenizer.pad_token_id
        for input_ids, labels in loader:
            input_ids, labels = input_ids.to(device), labels.to(device)
            optimizer.zero_grad()
            logits = model(input_ids, (input_ids != pad).long())
            loss = loss_fn(logits, labels)
            loss.backward()
            optimizer.step()
            schedule.step()
        float(loss.detach())  # wait for the device
        total = time.perf_counter() - started
        return {"seconds": total, "examples": len(data), "new_examples": len(data), "examples_per_s": len(data) / total,
                "processed_per_s": len(data) / total}


def summarise(samples: dict[str, list[dict]]) -> dict:
    med = lambda name, key: statistics.median(s[key] for s in samples[name])  # noqa: E731
    naive_epoch = med("ours", "epoch_seconds")
    return {
        "ours_examples_per_s": med("ours", "examples_per_s"),
        "plain_examples_per_s": med("plain", "examples_per_s"),
        "ratio": med("ours", "examples_per_s") / med("plain", "examples_per_s"),
        "pair_ratios": [a["examples_per_s"] / b["examples_per_s"] for a, b in zip(samples["ours"], samples["plain"])],
        "ours_epoch_only_examples_per_s": statistics.median(s["new_examples"] / s["epoch_seconds"]
                                                            for s in samples["ours"]),
        "ewc_fisher_seconds": med("ewc", "after_epoch_seconds"),
        "ewc_fisher_fraction_of_epoch": med("ewc", "after_epoch_seconds") / naive_epoch,
        "ewc_epoch_fraction_over_naive": med("ewc", "epoch_seconds") / naive_epoch - 1,
        "replay_epoch_fraction_over_naive": med("replay", "epoch_seconds") / naive_epoch - 1,
        "replay_examples_per_new_example": med("replay", "examples") / med("replay", "new_examples"),
        "replay_buffer_update_seconds": med("replay", "after_epoch_seconds"),
        "naive_epoch_seconds": naive_epoch,
        # a second replay+ewc round's training (buffer batches, EWC penalty and Fisher pass): rows processed per
        # second over the whole call, against the plain loop's
        "replay_ewc_processed_per_s": med("replay_ewc", "processed_per_s"),
        "replay_ewc_ratio": med("replay_ewc", "processed_per_s") / med("plain", "processed_per_s"),
        "replay_ewc_epochs_only_ratio": med("replay_ewc", "processed_per_epoch_s") / med("plain", "processed_per_s"),
    }


def report(result: dict) -> str:
    s = result["summary"]
    rows = [["ours (train_one_experience, naive)", f"{s['ours_examples_per_s']:.1f}", f"{s['ratio']:.3f}x"],
            ["ours, a second replay+ewc round (rows processed, buffer included)",
             f"{s['replay_ewc_processed_per_s']:.1f}", f"{s['replay_ewc_ratio']:.3f}x"],
            ["plain PyTorch loop", f"{s['plain_examples_per_s']:.1f}", "1.000x"]]
    lines = [f"### trainer throughput: {result['examples']} rows, 1 epoch, batch {result['train']['batch_size']}, "
             f"median of {result['repeats']} alternated runs each", "",
             harness.markdown_table(["trainer", "examples/s (whole call)", "vs plain"], rows), "",
             f"- ours >= 0.95x plain: **{harness.verdict(s['ratio'] >= 0.95)}**, measured {s['ratio']:.3f}x "
             f"(per pair: {', '.join(f'{r:.2f}' for r in s['pair_ratios'])}); ours inside the epoch loop only: "
             f"{s['ours_epoch_only_examples_per_s']:.1f} ex/s",
             f"- a fine-tuning round's training >= 0.8x plain: naive **{harness.verdict(s['ratio'] >= 0.8)}** "
             f"({s['ratio']:.3f}x), replay+ewc **{harness.verdict(s['replay_ewc_ratio'] >= 0.8)}** "
             f"({s['replay_ewc_ratio']:.3f}x with its Fisher pass, {s['replay_ewc_epochs_only_ratio']:.3f}x in its epochs)",
             f"- EWC Fisher pass: {s['ewc_fisher_seconds']:.2f} s = {s['ewc_fisher_fraction_of_epoch']:.2f} of a naive "
             f"epoch (its penalty adds {s['ewc_epoch_fraction_over_naive']:+.2f} to the epoch itself)",
             f"- replay ({result['buffer']} rows in the buffer): epoch "
             f"{s['replay_epoch_fraction_over_naive']:+.2f} over naive, {s['replay_examples_per_new_example']:.2f} "
             f"examples processed per new example, buffer update {s['replay_buffer_update_seconds']:.2f} s"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
