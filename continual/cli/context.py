"""What a command starts from: the workspace that holds -C, its params, and what a killed process left there."""
from __future__ import annotations

import argparse
from typing import Any

from continual import progress
from continual.arrivals.journal import interrupted_ingest
from continual.params import load_params
from continual.workspace.layout import NotAWorkspace, Workspace
from continual.workspace.repair import crash_damage as workspace_damage


def open_workspace(args: argparse.Namespace, required: bool = True) -> tuple[Workspace, dict[str, Any]]:
    """The workspace holding -C (default: the current folder), found upwards as git finds its repository, and
    its params. Paths the user passes stay relative to the current folder. Not ``required``: the -C folder
    itself, for a command that also works outside a workspace. Reads only: a command outside a workspace
    fails here (NotAWorkspace) before it writes anything."""
    try:
        ws = Workspace.find(args.workspace)
    except NotAWorkspace:
        if required:
            raise
        ws = Workspace.at(args.workspace)
    params = load_params(ws.params_file)
    progress.configure(params)  # the command's progress bars
    return ws, params


def crash_damage(ws: Workspace) -> list[str]:
    """One line for each thing a killed process left: a damaged dvc.lock or rwlock, round folders half
    written, an ingest killed half way."""
    damage = workspace_damage(ws)
    journal = interrupted_ingest(ws)
    if journal is not None:
        damage.append(f"an ingest of {journal['key']} (from {journal.get('source', '?')}) was killed half way; "
                      "the next `continual ingest` also rolls it back")
    return damage
