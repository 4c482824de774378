"""Refuse bad input to `minitron train` before anything is written, each with the field and the fix.

Checks that need only the config are in the schema (:mod:`minitron.config.training`); these need the
model's architecture, the number of processes or the data on disk.
"""

from __future__ import annotations

from minitron.config.training import TrainCommand
from minitron.errors import MinitronError
from minitron.models.megatron_gpt import check_parallel_layout, check_sequence_length
from minitron.parallel.setup import data_parallel_size
from minitron.training import data, metrics, rundir


def check_train_inputs(cfg: TrainCommand, source, world_size: int) -> None:
    """Raise :class:`MinitronError` for the first problem found; reads files, writes nothing.

    ``source`` is the model's :class:`~minitron.models.checkpoint.ModelSource`."""
    check_run_inputs(cfg, source, world_size)
    settings, arch = cfg.train, source.arch
    if cfg.data.path is None:  # before loading the tokenizer, which a model without one would complain about
        data.check_data(None, settings.seq_length, arch.vocab_size, None)
    data.check_data(cfg.data.path, settings.seq_length, arch.vocab_size, data.eod_id(source),
                    data.tokenizer_identity(source))  # fmt: skip


def check_run_inputs(cfg, source, world_size: int) -> None:
    """What every command on the training engine checks before its data (train, distill, sft, dpo): the
    sequence length and layout fit the model, the batch divides over the data-parallel ranks, the W&B settings
    and the output directory are usable. ``cfg`` has ``train``, ``parallel``, ``logging`` and ``output``."""
    settings, arch = cfg.train, source.arch
    check_sequence_length(arch, "train.seq_length", settings.seq_length)
    check_parallel_layout(arch, cfg.parallel.tp, cfg.parallel.pp)
    dp = data_parallel_size(world_size, cfg.parallel.tp, cfg.parallel.pp)
    per_pass = settings.micro_batch_size * dp
    if settings.global_batch_size % per_pass:
        raise MinitronError(
            f"train.global_batch_size={settings.global_batch_size} is not divisible by train.micro_batch_size="
            f"{settings.micro_batch_size} x data-parallel size {dp} = {per_pass}; use a multiple of {per_pass}"
        )
    problem = metrics.wandb_problem(cfg.logging)
    if problem:
        raise MinitronError(problem)
    rundir.check_output(cfg.output)
