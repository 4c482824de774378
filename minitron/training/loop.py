"""The training loop: resume, step, validate, checkpoint, export the final model.

    find the newest valid checkpoint in OUTPUT/checkpoints and load it (any TP/PP/DP layout)
    for each step until train.steps:
        one global batch of micro-batches -> forward/backward (pipeline schedule) -> optimizer step
        log loss, lr, grad norm, tokens/s, memory; validation every train.eval_interval steps
        checkpoint every checkpoint.interval steps and after the last one
    write OUTPUT/final (minitron Megatron checkpoint: `minitron convert` turns it into HF)

Resuming is exact: the data position is ``consumed_samples``, the optimizer, schedule and RNG states
are restored, so a run killed and resumed ends with the same weights and losses as one that was not.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Optional

from minitron.config.training import TrainCommand
from minitron import failures, runtime
from minitron.errors import MinitronError
from minitron.models import checkpoint
from minitron.training import checkpointing
from minitron.training.data import TrainData, micro_batches
from minitron.training.engine import gather_params
from minitron.training.metrics import MetricsLogger, memory_gb
from minitron.training.step import StepFunctions, evaluate, train_step


def _num_micro_batches(cfg: TrainCommand) -> int:
    from megatron.core import parallel_state

    dp = parallel_state.get_data_parallel_world_size()
    return cfg.train.global_batch_size // (cfg.train.micro_batch_size * dp)


def resume(parts, run_dir: Path, cfg: TrainCommand, arch: dict) -> tuple[int, int, Optional[str]]:
    """Load the newest valid checkpoint of the run, if any: (step, consumed_samples, checkpoint name)."""
    checkpointing.remove_partials(run_dir)
    if not cfg.checkpoint.resume:
        return 0, 0, None
    found = checkpointing.find_resumable(run_dir)
    if found is None:
        return 0, 0, None
    step, consumed = checkpointing.load(parts, found, arch)
    return step, consumed, found.name


def export_final(parts, source, run_dir: Path, step: int, trained_tokens: Optional[int] = None) -> Path:
    """Write the model as a minitron Megatron checkpoint in OUTPUT/final (skipped when already there); its
    minitron.json records ``trained_tokens`` (the tokens this run trained it on)."""
    out = run_dir / "final"
    fingerprint = f"minitron-train:{run_dir.resolve()}:step{step}"
    staging = checkpoint.begin_output(out, fingerprint, overwrite=True)
    if staging is not None:
        checkpointing.use_in_process_write_queue()
        with checkpoint.staged(staging):
            checkpoint.save_megatron_checkpoint(parts.module, source, staging, fingerprint, source.hf_config,
                                                extra_meta={"trained_tokens": trained_tokens})  # fmt: skip
        checkpoint.finish_output(staging, out)
    return out


def train(parts, data: TrainData, cfg: TrainCommand, run_dir, source, run_config: Optional[dict] = None,
          on_step: Optional[Callable[[int], None]] = None, functions: Optional[StepFunctions] = None,
          export: Callable = export_final) -> dict:  # fmt: skip
    """Train ``parts`` on ``data`` as ``cfg`` says, in ``run_dir``; returns the run's summary.

    ``source`` is the :class:`~minitron.models.checkpoint.ModelSource` the model came from (architecture,
    HF config and tokenizer files for the final checkpoint). ``on_step(step)`` is called after every step
    and its checkpoint (tests use it to kill the run). ``functions`` is what runs per micro-batch (default:
    the language-model loss; distillation passes its own); ``export(parts, source, run_dir, step, trained_tokens)`` writes
    OUTPUT/final. ``cfg`` may be any command with ``train``, ``checkpoint`` and ``logging`` sections.
    """
    run_dir = Path(run_dir)
    settings = cfg.train
    arch = source.arch.to_dict()
    num_micro_batches = _num_micro_batches(cfg)
    shape = dict(num_micro_batches=num_micro_batches, seq_length=settings.seq_length,
                 micro_batch_size=settings.micro_batch_size)  # fmt: skip
    step, consumed, resumed_from = resume(parts, run_dir, cfg, arch)
    metrics = MetricsLogger(run_dir, cfg.logging, settings.steps, step, run_config or {})
    metrics.start(step, resumed_from=resumed_from, consumed_samples=consumed, layout=checkpointing.layout(parts))
    if resumed_from:
        metrics.note(f"resumed from {resumed_from}: step {step}, {consumed:,} samples consumed")
    batches = micro_batches(data.train, settings.global_batch_size, settings.micro_batch_size, consumed)
    sequences_per_sample = (functions or StepFunctions()).sequences_per_sample  # 2 for a preference pair
    tokens_per_step = settings.global_batch_size * sequences_per_sample * settings.seq_length
    started, first_step, last, valid_loss = time.perf_counter(), step, None, None
    try:
        while step < settings.steps:
            step_start = time.perf_counter()
            result = train_step(parts, batches, **shape, functions=functions)
            seconds = time.perf_counter() - step_start
            step += 1
            consumed += settings.global_batch_size
            if not math.isfinite(result.loss):
                raise MinitronError(
                    f"step {step}: the training loss is {result.loss}; lower train.lr or check the data "
                    f"(the last good checkpoint is in {checkpointing.checkpoints_dir(run_dir)})"
                )
            last = {"loss": result.loss, "lr": result.lr, "grad_norm": result.grad_norm, "tokens": result.tokens,
                    "tokens_per_s": tokens_per_step / seconds, "step_seconds": seconds, "memory_gb": memory_gb(),
                    "skipped": result.skipped, "consumed_samples": consumed, **result.extras}  # fmt: skip
            metrics.train(step, last, settings.log_interval)
            evaluate_now = settings.eval_interval and (step % settings.eval_interval == 0 or step == settings.steps)
            if data.valid is not None and evaluate_now:
                valid = micro_batches(data.valid, settings.global_batch_size, settings.micro_batch_size, 0)
                valid_loss, valid_tokens = evaluate(parts.model, valid, settings.eval_iters, **shape,
                                                    functions=functions)  # fmt: skip
                metrics.valid(step, valid_loss, valid_tokens)
            if step % cfg.checkpoint.interval == 0 or step == settings.steps:
                gather_params(parts.model)
                saved = checkpointing.save(parts, run_dir, step, consumed, arch, cfg.checkpoint.keep_last,
                                           cfg.checkpoint.verify)  # fmt: skip
                metrics.note(f"saved checkpoint {saved.name}")
            if on_step is not None:
                on_step(step)
            failures.check_interrupted()  # a signal whose exception was swallowed (e.g. during a checkpoint write)
    finally:
        metrics.close()
    gather_params(parts.model)
    final = export(parts, source, run_dir, step, consumed * settings.seq_length)
    return {
        "output": str(run_dir),
        "final": str(final),
        "steps": step,
        "steps_this_run": step - first_step,
        "resumed_from": resumed_from,
        "consumed_samples": consumed,
        "loss": None if last is None else last["loss"],
        "valid_loss": valid_loss,
        "seconds": round(time.perf_counter() - started, 3),
    }


def report(result: dict, loss_name: str, model_name: str) -> None:
    """A finished run's last progress line (stderr) and its result as the last stdout line."""
    loss = "-" if result["loss"] is None else f"{result['loss']:.4f}"
    runtime.log(f"done: {result['steps']} steps, {loss_name} {loss}, {model_name} in {result['final']} "
                f"(export: minitron convert model.path={result['final']} output=HF_DIR)")  # fmt: skip
    runtime.print_result(result)
