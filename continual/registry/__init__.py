"""registry: the training side's MLflow. Each finished round becomes a run in its lineage and its model a
registered version; the gate judges the newest round, and the champion alias (which the server follows)
moves by compare-and-set with a history of every move.

    tags.py          every tag name, one home (the ones the server reads come from service.registry_tags)
    connect.py       where a workspace tracks, connecting once per stage (Tracking)
    race_safe_client.py  tag writes that survive a concurrent writer
    local_store.py   the workspace's own mlflow.db, following the workspace when it moves
    lock.py          the workspace's registry lock
    model_name.py    which registered model a stream uses, and who owns a name
    round_folder.py  a finished round folder, its content hash and its run
    register.py      a round's model as a registered version
    abandoned.py     closing what a killed track stage left open
    lineage.py       logging rounds as runs (log_round, reconcile)
    gate.py          the gate (pure) and the int8 check
    champion.py      the alias: compare-and-set moves, history, promote, rollback
    track.py         the track stage: reconcile, then gate the newest round

Layer 7: may import continual.params, continual.progress, continual.workspace, continual.arrivals,
continual.reports, continual.model, continual.strategies, continual.rounds, and service; never continual.cli.
"""
