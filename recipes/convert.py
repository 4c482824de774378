"""minitron convert: Hugging Face directory <-> minitron Megatron checkpoint.

    minitron convert model.path=HF_DIR output=CKPT          # HF -> Megatron (dist checkpoint)
    minitron convert model.path=CKPT output=HF_DIR          # Megatron -> HF (safetensors)
    torchrun --nproc-per-node 2 $(which minitron) convert model.path=CKPT output=HF_DIR parallel.pp=2

The Megatron checkpoint reshards: the layout used to write it does not bind the layout that loads
it. Tensors stream one at a time; the output appears atomically (staged in OUTPUT.partial).
"""

from minitron import runtime
from minitron.config import schema
from minitron.models import checkpoint
from minitron.models.megatron_gpt import check_parallel_layout
from minitron.fsutil import check_not_an_input
from minitron.parallel import output_lock, setup_distributed, teardown_distributed


@runtime.recipe("convert")
def main(cfg) -> None:
    cfg = schema.to_object(cfg)
    source = checkpoint.open_model(cfg.model.path)
    fingerprint = source.fingerprint()
    check_parallel_layout(source.arch, cfg.parallel.tp, cfg.parallel.pp)
    check_not_an_input(cfg.output, [("model.path", cfg.model.path)])
    ctx = setup_distributed(cfg.parallel.tp, cfg.parallel.pp)
    try:
        with output_lock(cfg.output):
            staging = checkpoint.begin_output(cfg.output, fingerprint, cfg.overwrite)
            target = "megatron" if source.kind == "hf" else "hf"
            if staging is None:
                runtime.log(f"{cfg.output} already holds this model converted from {source.path}: nothing to do")
            else:
                with checkpoint.staged(staging):
                    dtype = source.build_dtype(cfg.model.dtype, for_compute=False)
                    runtime.log(f"loading {source.path} ({source.kind}) at TP={ctx.tp} PP={ctx.pp} in {str(dtype).replace('torch.', '')}")
                    model = checkpoint.load_model(source, ctx.tp, ctx.pp, dtype)
                    runtime.log(f"writing {target} checkpoint to {cfg.output}")
                    if target == "megatron":
                        checkpoint.save_megatron_checkpoint(model, source, staging, fingerprint, source.hf_config,
                                                            extra_meta=checkpoint.carried_meta(source))  # fmt: skip
                    else:
                        checkpoint.export_hf(model, source.arch, source.hf_config, source.carried_files, staging, fingerprint,
                                             extra_meta=checkpoint.carried_meta(source))  # fmt: skip
                checkpoint.finish_output(staging, cfg.output)
            runtime.print_result(
                {"output": str(cfg.output), "format": target, "params": source.arch.params, "skipped": staging is None}
            )
    finally:
        teardown_distributed()


if __name__ == "__main__":
    main()
