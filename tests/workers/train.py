"""torchrun worker: training runs of a tiny model on a small learnable corpus, one layout after another.

    torchrun --nproc-per-node 2 tests/workers/train.py JOBS.json

JOBS.json is a list of jobs, run in order in the same process group; each is a dict of :func:`run_job`'s
arguments (``model``, ``run``, ``tp``, ``pp``, ``steps``, ...). A job with ``kill_after=K`` SIGKILLs
global rank 0 after step K (and its checkpoint, if any), which ends the launch like a crashed node.
Results are in each run directory (metrics.jsonl, checkpoints/, final/). The pytest process imports
this module to run the same jobs in-process at TP=1.
"""

import json
import os
import signal
import sys

import torch

SEQ_LENGTH = 32


def corpus(num_samples: int, seed: int, seq_length: int = SEQ_LENGTH) -> list[dict]:
    """Sample dicts of an arithmetic-progression language: token t+1 = t + stride (mod 50), + 40."""
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(num_samples):
        start, stride = (int(x) for x in torch.randint(0, 50, (2,), generator=generator))
        stride = stride % 3 + 1
        sequence = (start + stride * torch.arange(seq_length + 1)) % 50 + 40
        samples.append({"tokens": sequence[:-1], "labels": sequence[1:], "loss_mask": torch.ones(seq_length),
                        "position_ids": torch.arange(seq_length)})  # fmt: skip
    return samples


def make_config(model: str, run: str, tp: int = 1, pp: int = 1, steps: int = 5, global_batch_size: int = 4,
                micro_batch_size: int = 1, lr: float = 1e-3, distributed_optimizer: bool = False,
                interval: int = 100, keep_last: int = 2, verify: str = "checksum", eval_interval: int = 0,
                resume: bool = True, scale: dict | None = None):  # fmt: skip
    from minitron.config.common import ModelConfig, ParallelConfig
    from minitron.config.scale import ScaleSettings
    from minitron.config.training import CheckpointConfig, LoggingConfig, TrainCommand, TrainSettings

    settings = TrainSettings(
        steps=steps, global_batch_size=global_batch_size, micro_batch_size=micro_batch_size, seq_length=SEQ_LENGTH,
        lr=lr, min_lr=lr / 10, warmup_steps=1, distributed_optimizer=distributed_optimizer,
        eval_interval=eval_interval, eval_iters=1, log_interval=1, scale=ScaleSettings(**(scale or {})),
    )  # fmt: skip
    return TrainCommand(
        model=ModelConfig(path=model), parallel=ParallelConfig(tp=tp, pp=pp), train=settings,
        checkpoint=CheckpointConfig(interval=interval, keep_last=keep_last, verify=verify, resume=resume),
        logging=LoggingConfig(progress=False, tensorboard=False), output=run,
    )  # fmt: skip


def run_job(model: str, run: str, kill_after: int | None = None, dtype: str = "float32", **settings) -> dict:
    """Train ``model`` (HF dir or minitron checkpoint) into run directory ``run``; returns the summary."""
    from minitron.models.checkpoint import load_model, open_model
    from minitron.parallel import setup_distributed
    from minitron.parallel.scale import resolve_for_run
    from minitron.training import loop, rundir
    from minitron.training.data import TrainData
    from minitron.training.engine import build_training_parts

    cfg = make_config(model, run, **settings)
    source = open_model(model)
    ctx = setup_distributed(cfg.parallel.tp, cfg.parallel.pp, cfg.train.seed)
    scale = resolve_for_run(cfg.train, cfg.parallel, ctx.tp * ctx.pp * ctx.dp, source.arch.num_layers)
    torch.manual_seed(cfg.train.seed)
    model_shard = load_model(source, cfg.parallel.tp, cfg.parallel.pp, getattr(torch, dtype), scale)
    parts = build_training_parts(model_shard, cfg.train, scale)
    rundir.prepare(run, json.dumps(settings, sort_keys=True) + "\n")

    def on_step(step):
        if step == kill_after and torch.distributed.get_rank() == 0:
            os.kill(os.getpid(), signal.SIGKILL)

    data = TrainData(train=corpus(256, seed=0), valid=corpus(8, seed=1))
    return loop.train(parts, data, cfg, run, source, on_step=on_step)


def main():
    from minitron.parallel import teardown_distributed

    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    for job in jobs:
        run_job(**job)
    teardown_distributed()


if __name__ == "__main__":
    main()
