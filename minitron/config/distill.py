"""Schemas of ``minitron distill``: the ``distill`` group (``conf/distill/*.yaml``) and the command around it.

``conf/distill.yaml`` composes :class:`DistillCommand`: the teacher and the student, the parallel layout
(shared by both), the tokenized corpus, the training hyperparameters (the ``train`` group, as for
``minitron train``), checkpointing, logging and the loss (:class:`DistillSettings`). Checks that need
only the config run here; those that need the models, the data or the number of processes run in
:mod:`minitron.distill.checks` before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from minitron.config.common import ModelConfig, ParallelConfig, check_range
from minitron.config.training import CheckpointConfig, LoggingConfig, TrainDataConfig, TrainSettings
from minitron.errors import MinitronError

LOGIT_LOSSES = ("forward_kl", "reverse_kl", "topk")  # minitron.distill.losses implements each
HIDDEN_LOSSES = ("cosine", "mse")


@dataclass
class TeacherConfig:
    path: str = MISSING  # HF directory or minitron Megatron checkpoint; built in the student's layout and dtype


@dataclass
class DistillSettings:
    loss: str = "forward_kl"  # logit loss: forward_kl = KL(teacher||student) (the paper's best) | reverse_kl | topk
    temperature: float = 1.0  # softmax temperature of both models' logits (the paper: 1.0 is best)
    topk: Optional[int] = None  # loss=topk: KL over the teacher's k likeliest tokens, renormalised (k<=100 hurts)
    lm_loss_weight: float = 0.0  # weight of the student's next-token cross-entropy added to the KD loss (paper: 0)
    hidden_pairs: List[List[int]] = field(default_factory=list)  # [[student_layer, teacher_layer], ...], 0-based
    hidden_loss: str = "cosine"  # loss between paired layer outputs: cosine | mse (rescaled to the logit loss)

    def __post_init__(self):
        if self.loss not in LOGIT_LOSSES:
            raise MinitronError(f"distill.loss={self.loss!r}: use one of {', '.join(LOGIT_LOSSES)}")
        if self.hidden_loss not in HIDDEN_LOSSES:
            raise MinitronError(f"distill.hidden_loss={self.hidden_loss!r}: use one of {', '.join(HIDDEN_LOSSES)}")
        check_range("distill.temperature", self.temperature, above=0)
        if self.loss == "topk" and self.topk is None:
            raise MinitronError("distill.loss=topk needs distill.topk=K (the number of teacher tokens kept)")
        check_range("distill.topk", self.topk, at_least=1)
        check_range("distill.lm_loss_weight", self.lm_loss_weight, at_least=0)
        for pair in self.hidden_pairs:
            if len(pair) != 2:
                raise MinitronError(
                    f"distill.hidden_pairs: {list(pair)} is not a [student_layer, teacher_layer] pair; "
                    "write distill.hidden_pairs=[[s,t],...]"
                )


@dataclass
class DistillCommand:
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: ModelConfig = field(default_factory=ModelConfig)  # student.dtype sets both models' dtype
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    data: TrainDataConfig = field(default_factory=TrainDataConfig)
    train: TrainSettings = field(default_factory=TrainSettings)
    distill: DistillSettings = field(default_factory=DistillSettings)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    output: str = MISSING  # run directory: checkpoints/, final/ (the student), config.yaml, metrics.jsonl, ...


def register() -> None:
    """Register the distillation schema with Hydra's ConfigStore (called by ``schema.register``)."""
    ConfigStore.instance().store(name="distill_schema", node=DistillCommand)
