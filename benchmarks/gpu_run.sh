#!/usr/bin/env bash
# The GPU run of the forgetting benchmark (docs/benchmarks.md), on the borrowed H200 machine; with
# RUN=distributed, the multi-process round instead (docs/benchmarks.md, "Multi-process rounds").
# That machine has Python 3.12 with torch and transformers but no package registry, so `.gpu/` (git-ignored)
# travels with the tree: wheels of avalanche-lib and the few pure-Python packages it imports
# (pytorchcv, dill, qpsolvers, pydot), MiniLM's weights stored as fp16 (the 64 MiB carry limit; widened
# back to fp32 below) with its tokenizer, and import-time stand-ins for wandb, gdown and GPUtil, which
# avalanche imports for loggers, dataset downloads and GPU stats that continual never calls (each raises
# ImportError on first use). Nothing here runs in CI.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD/.gpu/shims:$PWD" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
python3 - <<'PY' || exit 1
import shutil
from safetensors.torch import load_file, save_file
shutil.copytree(".gpu/minilm", "/tmp/minilm")
weights = load_file("/tmp/minilm/model.safetensors")
save_file({k: v.float() if v.is_floating_point() else v for k, v in weights.items()}, "/tmp/minilm/model.safetensors")
import torch, transformers, avalanche.training
print("torch", torch.__version__, "transformers", transformers.__version__, "cuda", torch.cuda.get_device_name(0))
PY
OUT=${OUT:-bench/gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt"
if [ "${RUN:-forgetting}" = distributed ]; then
    # One replay+ewc round on 10,000 train rows (3,125 of each VADER domain, 80% train): train.processes 1, and
    # one process per GPU when there are more (DDP over NCCL). Target: the round under 30 s on one GPU.
    GPUS=$(nvidia-smi -L | wc -l); PROCS=1; [ "$GPUS" -gt 1 ] && PROCS="1,$GPUS"
    timeout ${LIMIT:-540} python3 benchmarks/distributed.py --base /tmp/minilm --device cuda --threads 4 \
        --domains tweets,movies,amazon,nyt --per-domain 3125 --processes $PROCS --repeats ${REPEATS:-2} \
        --out "$OUT/distributed" > "$OUT/distributed.log" 2>&1
    tail -n 20 "$OUT/distributed.log"
    exit
fi
ARGS="--base /tmp/minilm --device cuda --seeds ${SEEDS:-1,2,3}"
timeout ${LIMIT:-540} python3 benchmarks/forgetting.py --stream vader --per-domain ${PER_DOMAIN:-1000} $ARGS \
    --out "$OUT/vader" > "$OUT/forgetting_vader.log" 2>&1 &
timeout ${LIMIT:-540} python3 benchmarks/forgetting.py --stream wordnet --per-class ${PER_CLASS:-150} $ARGS \
    --out "$OUT/wordnet" > "$OUT/forgetting_wordnet.log" 2>&1 &
wait
tail -n 40 "$OUT"/forgetting_*.log
