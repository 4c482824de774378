"""minitron bench: prefill and decode tokens/s with the KV cache on the Megatron engine, and through transformers.

    minitron bench model.path=DIR [bench.batch=1 bench.prompt_len=128 bench.output_len=128 bench.repeats=3]
    minitron bench model.path=DIR output=bench.json                                     # the result as a file too
    torchrun --nproc-per-node 2 $(which minitron) bench model.path=DIR parallel.tp=2     # no transformers figure

DIR is an HF directory or a minitron Megatron checkpoint. Prompts are random token ids; decoding is greedy
for exactly bench.output_len tokens (definitions in minitron.eval.throughput). With bench.reference=true,
one process and an HF directory, the same loop runs through transformers (same dtype and device) as a
second figure. The last stdout line is one JSON object with both figures and their ratio.
"""

import os

from minitron import runtime
from minitron.config import schema
from minitron.eval import throughput
from minitron.fsutil import check_not_an_input
from minitron.models import checkpoint
from minitron.models.megatron_gpt import check_parallel_layout, check_sequence_length
from minitron.parallel import setup_distributed, teardown_distributed


@runtime.recipe("bench")
def main(cfg) -> None:
    cfg = schema.to_object(cfg)
    bench = cfg.bench
    source = checkpoint.open_model(cfg.model.path)
    check_parallel_layout(source.arch, cfg.parallel.tp, cfg.parallel.pp)
    check_sequence_length(source.arch, "bench.prompt_len + bench.output_len", bench.prompt_len + bench.output_len)
    if cfg.output:
        check_not_an_input(cfg.output, [("model.path", cfg.model.path)])
    prompts = throughput.random_prompts(bench.batch, bench.prompt_len, source.arch.vocab_size)
    ctx = setup_distributed(cfg.parallel.tp, cfg.parallel.pp)
    try:
        dtype = source.build_dtype(cfg.model.dtype, for_compute=True)
        runtime.log(f"bench {source.path}: batch {bench.batch}, prompt {bench.prompt_len}, output {bench.output_len} "
                    f"tokens, TP={ctx.tp} PP={ctx.pp}, {str(dtype).replace('torch.', '')} on {ctx.device.type}")  # fmt: skip
        model = checkpoint.load_model(source, ctx.tp, ctx.pp, dtype).eval()
        result = {"megatron": throughput.megatron_throughput(model, prompts, bench.output_len, bench.repeats)}
        del model
        single = int(os.environ.get("WORLD_SIZE", "1")) == 1
        if bench.reference and single and source.kind == "hf":
            result["transformers"] = throughput.hf_throughput(
                source.path, prompts, bench.output_len, bench.repeats, dtype
            )
            for phase in ("prefill", "decode"):
                theirs = result["transformers"][f"{phase}_tokens_per_s"]
                if theirs:
                    result[f"{phase}_ratio"] = result["megatron"][f"{phase}_tokens_per_s"] / theirs
        for name, rates in ((k, v) for k, v in result.items() if isinstance(v, dict)):
            decode = rates["decode_tokens_per_s"]
            runtime.log(f"{name:>12}: prefill {rates['prefill_tokens_per_s']:,.1f} tokens/s, decode "
                        + (f"{decode:,.1f} tokens/s" if decode else "-"))  # fmt: skip
        result.update(batch=bench.batch, prompt_len=bench.prompt_len, output_len=bench.output_len, tp=ctx.tp, pp=ctx.pp,
                      dtype=str(dtype).replace("torch.", ""), device=ctx.device.type, model=str(source.path))  # fmt: skip
        runtime.report_result(result, cfg.output)
    finally:
        teardown_distributed()


if __name__ == "__main__":
    main()
