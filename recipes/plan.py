"""minitron plan: per-rank memory and step time of a training stage in a layout, before running it.

    minitron plan model.path=DIR_OR_NAME [plan.stage=train|distill plan.teacher=...] parallel.tp=8 plan.dp=1 \
        train.micro_batch_size=1 train.global_batch_size=128 train.seq_length=8192 train.scale.recompute=selective \
        train.scale.sequence_parallel=true train.distributed_optimizer=true plan.dtype=bfloat16 plan.device_memory_gb=80

DIR_OR_NAME: an HF directory, a minitron checkpoint or an architecture name (llama31_8b, llama31_minitron_4b_width,
llama31_minitron_4b_depth, llama32_1b, smollm2_135m). Prints weights, gradients, optimizer state, activations,
logits/loss temporaries and (distill) the teacher's share of the fullest rank, the total against the device's
memory when known (plan.device_memory_gb, or this GPU's), FLOPs per step and the step time at plan.mfu. Reads only
configs. The last stdout line is one JSON object; ``fits`` is null when the device memory is unknown. When the
layout does not fit, the settings that would make it fit are listed (``fits_with``).
"""

from minitron import runtime
from minitron.config import schema
from minitron.plan.report import describe, plan_stage


@runtime.recipe("plan")
def main(cfg) -> None:
    cfg = schema.to_object(cfg)
    result = plan_stage(cfg)
    runtime.log(describe(result))
    runtime.print_result(result)


if __name__ == "__main__":
    main()
