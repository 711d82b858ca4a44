"""Build the WordNet class-incremental stream: noun glosses labelled by their lexicographer file.

    apt-get install wordnet-base          # Debian's WordNet 3.0: /usr/share/wordnet/data.noun
    python data/wordnet/build.py          # writes arrival1.csv .. arrival5.csv and LICENSE here

A synset line of data.noun reads ``offset lex_filenum ss_type w_cnt word lex_id ... | gloss``. Field 2 is
the lexicographer file number (05 = noun.animal, ...; lexnames(5WN)), the label here. The text is the gloss
alone (definition and any example sentences), without the synset's words: the words often name the class
outright, and a classifier of definitions is the harder, honest task.

Deterministic: the 20 largest noun files, ordered by file number, arrive 4 at a time; each class keeps at most
300 glosses, drawn with a fixed seed from those whose text is unique in data.noun (a gloss shared by two
synsets could carry two labels, and ingest would drop it as a duplicate anyway).
"""
from __future__ import annotations

import argparse
import csv
import random
import re
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent

# lexnames(5WN): the noun lexicographer files. The file is not in Debian's wordnet-base, only its man page.
NOUN_FILES = {
    3: "noun.Tops", 4: "noun.act", 5: "noun.animal", 6: "noun.artifact", 7: "noun.attribute", 8: "noun.body",
    9: "noun.cognition", 10: "noun.communication", 11: "noun.event", 12: "noun.feeling", 13: "noun.food",
    14: "noun.group", 15: "noun.location", 16: "noun.motive", 17: "noun.object", 18: "noun.person",
    19: "noun.phenomenon", 20: "noun.plant", 21: "noun.possession", 22: "noun.process", 23: "noun.quantity",
    24: "noun.relation", 25: "noun.shape", 26: "noun.state", 27: "noun.substance", 28: "noun.time",
}


def read_synsets(data_noun: Path) -> list[tuple[str, str, str]]:
    """(id, gloss, lexname) for every synset; the licence header lines start with spaces."""
    synsets = []
    with data_noun.open(encoding="utf-8") as f:
        for line in f:
            if line.startswith(" "):
                continue
            fields, _, gloss = line.partition(" | ")
            offset, lex_filenum = fields.split()[:2]
            synsets.append((f"wn30-n-{offset}", " ".join(gloss.split()), NOUN_FILES[int(lex_filenum)]))
    return synsets


def build(synsets: list[tuple[str, str, str]], n_classes: int, per_arrival: int, per_class: int,
          seed: str) -> list[list[dict]]:
    """Rows per arrival: the ``n_classes`` largest classes in file-number order, ``per_arrival`` at a time."""
    text_counts = Counter(gloss for _, gloss, _ in synsets)
    by_label: dict[str, list[dict]] = defaultdict(list)
    for sid, gloss, label in synsets:
        if gloss and text_counts[gloss] == 1:
            by_label[label].append({"id": sid, "text": gloss, "label": label})
    largest = sorted(by_label, key=lambda label: (-len(by_label[label]), label))[:n_classes]
    order = [label for label in NOUN_FILES.values() if label in largest]
    arrivals = []
    for start in range(0, len(order), per_arrival):
        rows = []
        for label in order[start:start + per_arrival]:
            group = sorted(by_label[label], key=lambda r: r["id"])
            random.Random(f"{seed}:{label}").shuffle(group)
            rows += sorted(group[:per_class], key=lambda r: r["id"])
        arrivals.append(rows)
    return arrivals


def licence_text(copyright_file: Path) -> str:
    """The WordNet3.0 licence paragraph of Debian's machine-readable copyright file, de-indented."""
    text = copyright_file.read_text(encoding="utf-8")
    block = re.search(r"^License: WordNet3\.0\n((?: .*\n)+)", text, re.M).group(1)
    lines = [line[1:] for line in block.splitlines()]
    return "\n".join("" if line == "." else line for line in lines).strip() + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wordnet-dir", type=Path, default=Path("/usr/share/wordnet"))
    parser.add_argument("--copyright", type=Path, default=Path("/usr/share/doc/wordnet-base/copyright"))
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--per-arrival", type=int, default=4)
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--seed", default="wordnet-3.0")
    args = parser.parse_args()

    arrivals = build(read_synsets(args.wordnet_dir / "data.noun"), args.classes, args.per_arrival,
                     args.per_class, args.seed)
    for i, rows in enumerate(arrivals, 1):
        path = args.out / f"arrival{i}.csv"
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["id", "text", "label"], lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        counts = Counter(r["label"] for r in rows)
        print(f"{path.name}: {len(rows)} rows, " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    (args.out / "LICENSE").write_text(
        "WordNet 3.0, as shipped by Debian's wordnet-base package (copyright file, License: WordNet3.0).\n\n"
        + licence_text(args.copyright), encoding="utf-8")


if __name__ == "__main__":
    main()
