"""Schema of ``minitron plan``: a model, a stage and a layout; the training settings are ``minitron train``'s."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from minitron.config.common import DTYPE_NAMES, ParallelConfig, check_range
from minitron.config.training import TrainSettings
from minitron.errors import MinitronError

PLAN_STAGES = ("train", "distill")  # a later stage adds its name here and its extra memory in minitron.plan.memory


@dataclass
class PlanSettings:
    stage: str = "train"  # train | distill (distill needs plan.teacher)
    teacher: Optional[str] = None  # distill: the teacher (HF dir, minitron checkpoint or architecture name)
    dp: int = 1  # data-parallel size (processes / (tp * pp))
    dtype: str = "bfloat16"  # parameter and activation dtype: float32 | bfloat16 | float16
    device_memory_gb: Optional[float] = None  # memory of one device in GiB (None: this GPU's, unknown on CPU)
    fused: Optional[bool] = None  # Transformer Engine kernels (None: true unless planning for CPU, dtype float32)
    mfu: float = 0.4  # model FLOPs utilisation assumed for the step time
    peak_tflops: float = 989.0  # dense peak TFLOP/s of one device in plan.dtype (H100 SXM bf16: 989)

    def __post_init__(self):
        if self.stage not in PLAN_STAGES:
            raise MinitronError(f"plan.stage={self.stage}: use one of {', '.join(PLAN_STAGES)}")
        if self.stage == "distill" and not self.teacher:
            raise MinitronError("plan.stage=distill needs plan.teacher=TEACHER (a path or an architecture name)")
        if self.dtype not in DTYPE_NAMES:
            raise MinitronError(f"plan.dtype={self.dtype}: use one of {', '.join(DTYPE_NAMES)}")
        check_range("plan.dp", self.dp, at_least=1)
        check_range("plan.device_memory_gb", self.device_memory_gb, above=0)
        check_range("plan.mfu", self.mfu, above=0, at_most=1)
        check_range("plan.peak_tflops", self.peak_tflops, above=0)


@dataclass
class PlanModel:
    path: str = MISSING  # HF directory, minitron checkpoint, or an architecture name (`minitron plan --help`)


@dataclass
class PlanCommand:
    model: PlanModel = field(default_factory=PlanModel)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    train: TrainSettings = field(default_factory=TrainSettings)  # micro/global batch, seq_length, distributed_optimizer, scale
    plan: PlanSettings = field(default_factory=PlanSettings)


def register() -> None:
    ConfigStore.instance().store(name="plan_schema", node=PlanCommand)
