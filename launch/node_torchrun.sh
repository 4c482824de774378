#!/bin/bash
# torchrun on this node, for one Slurm task per node (or alone on one machine); the command follows.
# The launcher of `minitron pipeline` across nodes (see launch/slurm_pipeline.sbatch):
#   minitron pipeline recipe=NAME launcher="srun --ntasks-per-node=1 launch/node_torchrun.sh"
# Each parallel stage then runs as: srun ... node_torchrun.sh /path/to/minitron <stage> key=value ...
set -euo pipefail
NPROC=${NPROC:-${SLURM_GPUS_PER_NODE:-$(python3 -c "import torch; print(max(torch.cuda.device_count(), 1))")}}
exec torchrun \
  --nnodes "${SLURM_NNODES:-1}" --node-rank "${SLURM_NODEID:-0}" --nproc-per-node "$NPROC" \
  --master-addr "${MASTER_ADDR:-127.0.0.1}" --master-port "${MASTER_PORT:-29500}" \
  "$@"
