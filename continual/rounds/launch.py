"""A round in ``train.processes`` processes: the calling process starts them and waits for the round folder.

``run_round`` sees ``train.processes`` > 1 (and a strategy that trains by gradient steps) and calls
``launch_round``, which reruns the round as ``python -m torch.distributed.run --standalone --nproc_per_node N
-m continual.rounds.rank``; each of those processes is one rank (``continual/rounds/rank.py``), and rank 0
writes the round. The caller then reads the finished round's metrics.json. How the ranks share the work:
``continual/model/distributed.py``.
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from continual.model import distributed
from continual.workspace.layout import Workspace

RANK_MODULE = "continual.rounds.rank"  # what torch.distributed.run starts in each process


def launch_round(ws: Workspace, key: str, params: dict) -> dict:
    """Train round ``key`` in ``train.processes`` processes under torch.distributed.run; returns its metrics."""
    n = distributed.processes(params)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS") or str(
        int(params["train"].get("threads") or 0) or int(os.environ.get("CONTINUAL_THREADS") or 0) or 1)}
    with tempfile.TemporaryDirectory(prefix="continual-round-") as tmp:
        given = Path(tmp) / "params.json"  # the caller's params, which may differ from the workspace's file
        given.write_text(json.dumps(params))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                   "-m", RANK_MODULE, str(ws.root), key, str(given)]
        code = subprocess.run(command, env=env,
                              preexec_fn=_end_with_parent if sys.platform.startswith("linux") else None).returncode
    if code:
        raise RuntimeError(f"round {key}: training in {n} processes under torch.distributed.run failed (exit code "
                           f"{code}); their output is above. train.processes: 1 trains in this process")
    return json.loads((ws.round_dir(key) / "metrics.json").read_text())


def _end_with_parent() -> None:
    """torch.distributed.run gets SIGTERM (and stops its workers) when the `continual round` that started it
    dies, even by kill -9: no orphan may go on to write a round folder the caller no longer waits for."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
