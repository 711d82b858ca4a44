"""What a track stage killed half way leaves in the store, closed by the next one before it logs anything."""
from __future__ import annotations

from continual.registry.connect import Tracking
from continual.registry.model_name import registered_model
from continual.registry.tags import (ABANDONED_TAG, DECISION_TAG, KIND_TAG, LINEAGE_TAG, REASONS_TAG, ROUND_HASH_TAG,
                                     RUN_ROUND_KEY_TAG)


def close_abandoned_runs(store: Tracking) -> list[str]:
    """Close what a track stage killed half way left open in this workspace's lineages; one note each.

    - a run still RUNNING that had finished its work (a lineage run, or a round run that carries its round
      hash, written last) -> FINISHED;
    - a round run without its round hash (RUNNING after a kill, FAILED after an outage) was never complete:
      ``reconcile`` logs that round again, so this run is tagged ``continual.abandoned``, ended FAILED, and
      the model version it may have registered is marked refused by the gate, never to be gated or served.

    Call it holding the registry lock (the track stage does): in one workspace no other process logs meanwhile.
    """
    client, ws, params = store.client, store.ws, store.params
    mine = f"tags.`{LINEAGE_TAG}` LIKE '%:{ws.identity[:12]}'"
    runs = [run for status in ("RUNNING", "FAILED")
            for run in client.search_runs([store.experiment_id], f"{mine} and attributes.status = '{status}'",
                                          max_results=1000)]
    name = registered_model(ws, params)
    notes = []
    for run in runs:
        tags, run_id = run.data.tags, run.info.run_id
        complete = tags.get(KIND_TAG) == "lineage" or ROUND_HASH_TAG in tags
        if complete:
            if run.info.status == "RUNNING":
                client.set_terminated(run_id, "FINISHED")
                notes.append(f"closed run {run_id} ({run.info.run_name}), left RUNNING by a killed track stage")
            continue
        if ABANDONED_TAG in tags:
            continue
        versions = (client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
                    if params["tracking"].get("register_models", True) else [])
        reason = (f"abandoned: the track stage logging round {tags.get(RUN_ROUND_KEY_TAG, '?')} was cut short "
                  f"(run {run_id}); the round was logged again in a run of its own")
        for version in versions:
            if DECISION_TAG not in version.tags:
                client.set_model_version_tag(name, version.version, REASONS_TAG, reason)
                client.set_model_version_tag(name, version.version, DECISION_TAG, "refused")
        if run.info.status == "RUNNING":
            client.set_terminated(run_id, "FAILED")
        client.set_tag(run_id, ABANDONED_TAG, reason)
        numbers = ", ".join(str(v.version) for v in versions)
        shown = f", its model version{'s' if len(versions) > 1 else ''} {numbers} refused" if versions else ""
        notes.append(f"run {run_id} ({run.info.run_name}) was cut short: marked abandoned{shown}")
    return notes
