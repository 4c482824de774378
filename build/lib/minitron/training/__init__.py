"""Training on Megatron-Core: the loop and its parts, one module each.

    engine.py         wrap the model (Float16Module, DDP), Adam optimizer, LR schedule
    step.py           one optimizer step / one validation pass through the pipeline schedules
    data.py           datasets of sample dicts -> this rank's micro-batches, from `consumed_samples`
    checkpointing.py  atomic, verified, resharding dist checkpoints; resume from the newest valid one
    rng.py            RNG states saved with checkpoints
    metrics.py        console progress, metrics.jsonl, TensorBoard, W&B
    rundir.py         the run directory: config, versions
    checks.py         bad input refused before anything is written
    loop.py           the loop that joins them (used by recipes/train.py)
"""
