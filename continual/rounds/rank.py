"""One rank of a multi-process round: ``python -m continual.rounds.rank WORKSPACE KEY PARAMS_JSON``, started by
torch.distributed.run for ``continual.rounds.launch``. It joins the process group and runs the round on this
rank's device; rank 0 writes the round folder."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from continual.model import distributed
from continual.rounds.round import run_round
from continual.workspace.layout import Workspace


def main(argv: list[str]) -> None:
    root, key, given = argv
    device = distributed.join()
    try:
        run_round(Workspace.at(root), key, json.loads(Path(given).read_text()), device=device)
    finally:
        distributed.leave()


if __name__ == "__main__":
    main(sys.argv[1:])
