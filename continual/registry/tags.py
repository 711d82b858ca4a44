"""Every MLflow tag name the training side writes or reads, by the object that carries it.

The names the server reads on a model version live in ``service.registry_tags`` (the service never imports
training code) and are imported from there; the rest are the training side's own.
"""
from service.registry_tags import ARRIVAL_TAG as ARRIVAL_TAG
from service.registry_tags import CHAMPION_ALIAS as CHAMPION_ALIAS
from service.registry_tags import DATA_HASH_TAG as DATA_HASH_TAG
from service.registry_tags import INT8_GATE_TAG as INT8_GATE_TAG
from service.registry_tags import ROUND_KEY_TAG as ROUND_KEY_TAG
from service.registry_tags import ROUND_TAG as ROUND_TAG

# On every run the track stage logs (lineage runs and round runs).
KIND_TAG = "continual.kind"  # "lineage" | "round"
LINEAGE_TAG = "continual.lineage"  # strategy:params-hash:workspace (continual.registry.round_folder.lineage)
STRATEGY_TAG = "continual.strategy"
PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow's own: a round run's lineage run

# On a lineage run.
FOLDER_TAG = "continual.workspace"  # the folder of the workspace that logged it (rewritten when it moves)

# On a round run.
ROUND_HASH_TAG = "continual.round_hash"  # the round folder's content hash; written last: the run is complete
RUN_ROUND_KEY_TAG = "continual.round_key"
RUN_ROUND_INDEX_TAG = "continual.round_index"
RUN_ARRIVAL_TAG = "continual.arrival"
RUN_DATA_HASH_TAG = "continual.data_hash"
PARENT_ROUND_TAG = "continual.parent_round"
GIT_COMMIT_TAG = "continual.git_commit"
ABANDONED_TAG = "continual.abandoned"  # its logging was cut short; the round was logged again

# On a model version, besides the ones the server reads (above).
RUN_ID_TAG = "run_id"  # the round run that registered it
VERSION_ROUND_HASH_TAG = "round_hash"  # as ROUND_HASH_TAG on that run
WORKSPACE_TAG = "workspace"  # the workspace id (12 characters) it was trained in

# The gate's verdict, on the round's run and on its model version.
DECISION_TAG = "promotion.decision"  # "accepted" | "refused": the gate ran to its end
REASONS_TAG = "promotion.reasons"  # one reason per check, "; "-joined
SKIPPED_TAG = "promotion.skipped"  # gated in a DVC experiment: the verdict was not applied

# The champion's moves: on the registered model, then on the version that became champion.
MOVE_TAG = "champion.move."  # a prefix: one tag per move, the key sorting by time, a JSON value
HISTORY_TAG = "champion.history"  # summary: the versions that held the alias, oldest first
LAST_MOVE_TAG = "champion.last_move"
SINCE_TAG = "champion.since"
HOW_TAG = "champion.how"
