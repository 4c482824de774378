#!/bin/bash
# Run a minitron stage on one node with torchrun: NPROC processes (one per GPU; gloo on CPU).
#   NPROC=8 launch/torchrun.sh eval model.path=CKPT data.path=heldout.jsonl parallel.tp=8
# Rendezvous: MASTER_ADDR/MASTER_PORT if set (multi-node: also NNODES and NODE_RANK), else localhost.
set -euo pipefail
NPROC=${NPROC:-$(python3 -c "import torch; print(max(torch.cuda.device_count(), 1))")}
exec torchrun \
  --nnodes "${NNODES:-1}" --node-rank "${NODE_RANK:-0}" --nproc-per-node "$NPROC" \
  --master-addr "${MASTER_ADDR:-127.0.0.1}" --master-port "${MASTER_PORT:-29500}" \
  "$(command -v minitron)" "$@"
