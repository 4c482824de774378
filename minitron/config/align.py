"""Schemas of ``minitron sft`` and ``minitron dpo``: the ``align`` group (``conf/align/*.yaml``) and the commands.

Both commands train with the engine of ``minitron train`` (the ``train``, ``checkpoint`` and ``logging``
sections are the same); their data are datasets made by ``minitron data prepare data.format=sft|preference``.
Checks that need the models or the data run in :mod:`minitron.align.checks` before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from minitron.config.common import ModelConfig, ParallelConfig, check_range
from minitron.config.training import CheckpointConfig, LoggingConfig, TrainSettings
from minitron.errors import MinitronError

PREFERENCE_LOSSES = ("dpo", "ipo", "rpo_sq", "rpo_bwd_kl", "rpo_fwd_kl")  # minitron.align.losses implements each


@dataclass
class AlignDataConfig:
    path: Optional[str] = None  # dataset prefix from `minitron data prepare data.format=sft|preference`
    pack: bool = False  # sft: pack consecutive examples into one sequence (block-diagonal causal mask); else pad


@dataclass
class ReferenceConfig:
    path: Optional[str] = None  # dpo: the frozen reference policy (None: model.path); must share the tokenizer


@dataclass
class AlignSettings:
    loss: str = "dpo"  # dpo | ipo | rpo_sq | rpo_bwd_kl | rpo_fwd_kl (formulas: minitron/align/losses.py)
    beta: float = 0.1  # strength of the KL anchor to the reference (TRL 0.1, NeMo-Aligner 0.2)
    eta: float = 1.0  # RPO: scale of the reward gap g = eta * (chosen_reward - rejected_reward)
    sft_weight: float = 0.0  # weight of -log p(chosen) per pair added to the preference loss (0: none)
    average_logps: bool = False  # mean instead of sum of answer-token log-probs per sequence (IPO-style)
    rounds: int = 1  # rounds; round k starts from and is referenced to round k-1's output (OUTPUT/round-k)

    def __post_init__(self):
        if self.loss not in PREFERENCE_LOSSES:
            raise MinitronError(f"align.loss={self.loss!r}: use one of {', '.join(PREFERENCE_LOSSES)}")
        check_range("align.beta", self.beta, above=0)
        check_range("align.eta", self.eta, at_least=0)
        check_range("align.sft_weight", self.sft_weight, at_least=0)
        check_range("align.rounds", self.rounds, at_least=1)


@dataclass
class SFTCommand:
    model: ModelConfig = field(default_factory=ModelConfig)  # the model to fine-tune (HF dir or minitron checkpoint)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    data: AlignDataConfig = field(default_factory=AlignDataConfig)
    train: TrainSettings = field(default_factory=TrainSettings)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    output: str = MISSING  # run directory: checkpoints/, final/ (the fine-tuned model), config.yaml, metrics.jsonl


@dataclass
class DPOCommand:
    model: ModelConfig = field(default_factory=ModelConfig)  # the policy to start from
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    data: AlignDataConfig = field(default_factory=AlignDataConfig)
    train: TrainSettings = field(default_factory=TrainSettings)  # micro/global batch sizes count pairs
    align: AlignSettings = field(default_factory=AlignSettings)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    output: str = MISSING  # run directory (rounds > 1: OUTPUT/round-1 ... round-N, the last one's final/ is the result)


@dataclass
class RewardsSettings:
    micro_batch_size: int = 4  # pairs per forward pass on one rank
    seq_length: int = 512  # tokens per sequence (chosen or rejected); at least the dataset's longest
    max_pairs: Optional[int] = None  # score only the first N pairs (null: all; rounded down to whole passes)

    def __post_init__(self):
        check_range("rewards.micro_batch_size", self.micro_batch_size, at_least=1)
        check_range("rewards.seq_length", self.seq_length, at_least=2)
        check_range("rewards.max_pairs", self.max_pairs, at_least=1, fix="or null for all")


@dataclass
class RewardsCommand:
    model: ModelConfig = field(default_factory=ModelConfig)  # the aligned policy
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)  # what it was aligned against (its start)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)  # TP x PP; DP splits the pairs
    data: AlignDataConfig = field(default_factory=AlignDataConfig)  # held-out pairs (`data.format=preference`)
    align: AlignSettings = field(default_factory=AlignSettings)  # beta and averaging of the implicit reward
    rewards: RewardsSettings = field(default_factory=RewardsSettings)  # batch and length
    output: Optional[str] = None  # also write the result JSON here, atomically


def register() -> None:
    """Register the alignment schemas with Hydra's ConfigStore (called by ``schema.register``)."""
    store = ConfigStore.instance()
    store.store(name="sft_schema", node=SFTCommand)
    store.store(name="dpo_schema", node=DPOCommand)
    store.store(name="rewards_schema", node=RewardsCommand)
