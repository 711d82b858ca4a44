"""The registry names the server reads on a model version; the track stage writes them (``continual.registry``).

Constants only: the service never imports training code, so the training side imports these from here.
"""

CHAMPION_ALIAS = "champion"  # the alias the promotion gate moves and a server follows (models:/NAME@champion)

# Tags on every model version the track stage registers.
ROUND_TAG = "round"  # the round's index in its stream
ROUND_KEY_TAG = "round_key"  # the round folder's name, <index>-<arrival>
ARRIVAL_TAG = "arrival"  # the arrival the round trained on
DATA_HASH_TAG = "data_hash"  # the hash of the data the round saw
INT8_GATE_TAG = "serving.int8"  # set by the promotion gate on every version it judges: "passed: ...", "failed: ..."
