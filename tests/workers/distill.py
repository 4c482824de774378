"""torchrun worker: distillation runs of tiny models, and vocab-parallel loss checks, one job after another.

    torchrun --nproc-per-node 2 tests/workers/distill.py JOBS.json

JOBS.json is a list of jobs run in order in one process group. ``{"kind": "losses", "out": FILE}`` compares
the vocab-parallel losses at TP=2 with full-vocabulary torch at TP=1 (values and student gradients) and
writes the largest differences to FILE (rank 0). Any other job is a dict of :func:`run_distill`'s
arguments; ``kill_after=K`` SIGKILLs global rank 0 after step K. The pytest process imports this module to
run the same jobs in-process (TP=1, PP=1).
"""

import json
import os
import signal
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the `workers` package

from workers.train import SEQ_LENGTH, corpus  # noqa: E402


def make_config(student: str, teacher: str, run: str, tp: int = 1, pp: int = 1, steps: int = 3,
                global_batch_size: int = 4, micro_batch_size: int = 1, lr: float = 1e-3, interval: int = 100,
                eval_interval: int = 0, distill: dict | None = None):  # fmt: skip
    from minitron.config.common import ModelConfig, ParallelConfig
    from minitron.config.distill import DistillCommand, DistillSettings, TeacherConfig
    from minitron.config.training import CheckpointConfig, LoggingConfig, TrainSettings

    settings = TrainSettings(
        steps=steps, global_batch_size=global_batch_size, micro_batch_size=micro_batch_size, seq_length=SEQ_LENGTH,
        lr=lr, min_lr=lr / 10, warmup_steps=1, eval_interval=eval_interval, eval_iters=1, log_interval=1,
    )  # fmt: skip
    return DistillCommand(
        teacher=TeacherConfig(path=teacher), student=ModelConfig(path=student), parallel=ParallelConfig(tp=tp, pp=pp),
        train=settings, distill=DistillSettings(**(distill or {})),
        checkpoint=CheckpointConfig(interval=interval, keep_last=2),
        logging=LoggingConfig(progress=False, tensorboard=False), output=run,
    )  # fmt: skip


def build(cfg):
    """(DistillationModel, TrainingParts, student source) for ``cfg`` in its layout (fp32)."""
    from minitron.distill.model import load_distillation
    from minitron.models.checkpoint import open_model
    from minitron.parallel import setup_distributed
    from minitron.training.engine import build_training_parts

    setup_distributed(cfg.parallel.tp, cfg.parallel.pp, cfg.train.seed)
    student, teacher = open_model(cfg.student.path), open_model(cfg.teacher.path)
    distill = load_distillation(student, teacher, cfg.parallel.tp, cfg.parallel.pp, torch.float32, cfg.distill,
                                cfg.train.seed)  # fmt: skip
    return distill, build_training_parts(distill.student, cfg.train), student


def run_distill(student: str, teacher: str, run: str, kill_after: int | None = None, **settings) -> dict:
    """Distill ``teacher`` into ``student`` in run directory ``run`` on the arithmetic corpus; returns the summary."""
    from minitron.training import loop, rundir
    from minitron.training.data import TrainData

    cfg = make_config(student, teacher, run, **settings)
    distill, parts, source = build(cfg)
    rundir.prepare(run, json.dumps(settings, sort_keys=True) + "\n")

    def on_step(step):
        if step == kill_after and torch.distributed.get_rank() == 0:
            os.kill(os.getpid(), signal.SIGKILL)

    data = TrainData(train=corpus(256, seed=0), valid=corpus(8, seed=1))
    try:
        return loop.train(parts, data, cfg, run, source, on_step=on_step, functions=distill.step_functions(),
                          export=distill.export_final)  # fmt: skip
    finally:
        distill.close()


# ---- vocab-parallel losses vs full-vocabulary torch ------------------------------------------------------


def reference_losses(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor, temperature: float,
                     k: int) -> dict:  # fmt: skip
    """Per-token losses ``[b, s]`` over the full vocabulary with plain torch (TP=1)."""
    log_p, log_q = F.log_softmax(student / temperature, -1), F.log_softmax(teacher / temperature, -1)
    top = teacher.topk(k, dim=-1).indices
    top_p = F.log_softmax(student.gather(-1, top) / temperature, -1)
    top_q = F.log_softmax(teacher.gather(-1, top) / temperature, -1)
    return {
        "forward_kl": F.kl_div(log_p, log_q, log_target=True, reduction="none").sum(-1),
        "reverse_kl": F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1),
        "topk": F.kl_div(top_p, top_q, log_target=True, reduction="none").sum(-1),
        "cross_entropy": F.cross_entropy(student.flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape),
    }


def check_losses(out: str, dtype: str = "float64", temperature: float = 2.0, k: int = 7) -> None:
    """Max |difference| of each loss (value and student gradient) between TP=2 vocab-parallel and TP=1 torch,
    on random logits ``[2, 5, 64]`` of ``dtype`` (a masked sum of each per-token loss is back-propagated)."""
    from megatron.core import parallel_state

    from minitron.distill import losses, vocab_parallel
    from minitron.parallel import setup_distributed

    setup_distributed(2, 1)
    group, rank = parallel_state.get_tensor_model_parallel_group(), parallel_state.get_tensor_model_parallel_rank()
    generator = torch.Generator().manual_seed(0)
    batch, seq, vocab = 2, 5, 64
    student = (torch.randn(batch, seq, vocab, generator=generator, dtype=torch.float64) * 3).to(getattr(torch, dtype))
    teacher = (torch.randn(batch, seq, vocab, generator=generator, dtype=torch.float64) * 3).to(getattr(torch, dtype))
    labels = torch.randint(0, vocab, (batch, seq), generator=generator)
    mask = (torch.rand(batch, seq, generator=generator) > 0.2).float()
    shard = slice(rank * vocab // 2, (rank + 1) * vocab // 2)
    computed = {
        "forward_kl": lambda s, t, g: losses.forward_kl(s, t, temperature, g),
        "reverse_kl": lambda s, t, g: losses.reverse_kl(s, t, temperature, g),
        "topk": lambda s, t, g: losses.topk_kl(s, t, k, temperature, g),
        "cross_entropy": lambda s, t, g: vocab_parallel.cross_entropy(s, labels, g),
    }
    results = {}
    for name, loss in computed.items():
        full = student.clone().requires_grad_()
        expected = reference_losses(full, teacher, labels, temperature, k)[name]
        (expected * mask).sum().backward()
        local = student[..., shard].clone().requires_grad_()
        got = loss(local, teacher[..., shard], group)
        (got * mask).sum().backward()
        grad = vocab_parallel._all_gather_last_dim(local.grad, group)
        results[name] = {
            "value": float((got - expected).detach().abs().max()), "loss": float((expected * mask).sum().detach()),
            "grad": float((grad - full.grad).abs().max()), "grad_norm": float(full.grad.norm()),
        }  # fmt: skip
    if torch.distributed.get_rank() == 0:
        Path(out).write_text(json.dumps(results, indent=2))


def main():
    from minitron.parallel import teardown_distributed

    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    for job in jobs:
        if job.pop("kind", "run") == "losses":
            check_losses(**job)
        else:
            run_distill(**job)
    teardown_distributed()


if __name__ == "__main__":
    main()
