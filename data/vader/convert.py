"""Rebuild the shipped VADER CSVs from the vaderSentiment 3.3.2 sdist (provenance of data/vader/*.csv).

    pip download --no-deps --no-binary :all: vaderSentiment==3.3.2
    tar xzf vaderSentiment-3.3.2.tar.gz
    tar xzf vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz
    python data/vader/convert.py hutto_ICWSM_2014 data/vader

Mean human rating in -4..4 -> neg (< -0.5), neu, pos (> 0.5), the thresholds VADER's authors use.
"""
import csv
import sys
from pathlib import Path

DOMAINS = {
    "tweets": "tweets_GroundTruth.txt",
    "movies": "movieReviewSnippets_GroundTruth.txt",
    "amazon": "amazonReviewSnippets_GroundTruth.txt",
    "nyt": "nytEditorialSnippets_GroundTruth.txt",
}


def label_of(rating: float) -> str:
    if rating < -0.5:
        return "neg"
    return "pos" if rating > 0.5 else "neu"


def main(source: Path, target: Path) -> None:
    for domain, filename in DOMAINS.items():
        lines = (source / filename).read_text(encoding="utf-8").splitlines()
        with open(target / f"{domain}.csv", "w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["id", "text", "label"])
            for line in lines:
                if not line.strip():
                    continue
                row_id, rating, text = line.split("\t", 2)
                writer.writerow([f"{domain}-{row_id}", text.strip(), label_of(float(rating))])


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
