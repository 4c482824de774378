"""minitron eval: held-out loss and perplexity on the Megatron engine, at any TP/PP/DP.

    minitron eval model.path=DIR data.path=FILE [eval.seq_length=512] [eval.max_windows=N]
    torchrun --nproc-per-node 2 $(which minitron) eval model.path=DIR data.path=FILE parallel.tp=2
    minitron eval model.path=DIR data.path=FILE eval.teacher=TEACHER_DIR

DIR is an HF directory or a minitron Megatron checkpoint; FILE is .txt, .jsonl, .parquet or a directory of them.
The loss definition is in :mod:`minitron.eval.heldout`. ``eval.reference=true`` also computes it
with transformers on the same windows (HF directories only). The last stdout line is one JSON object
with ``loss``, ``ppl``, ``tokens`` and ``model`` (path, parameter counts, tokens it was trained on when its
checkpoint records them), also written to ``output=FILE`` when given; with ``eval.teacher`` (same tokenizer,
built in the model's layout and dtype) also ``kl`` (mean KL(teacher || model) per token), ``teacher_loss`` and
``teacher`` (its path); ``versions`` names the software that computed it (:func:`minitron.runtime.versions`).
"""

import contextlib
import time

from minitron import runtime
from minitron.config import schema
from minitron.data.documents import read_texts
from minitron.errors import MinitronError
from minitron.fsutil import check_not_an_input
from minitron.eval import heldout
from minitron.models import checkpoint
from minitron.models.megatron_gpt import check_parallel_layout, check_sequence_length
from minitron.models.tokenizer import load_tokenizer
from minitron.parallel import output_lock, setup_distributed, teardown_distributed


@runtime.recipe("eval")
def main(cfg) -> None:
    cfg = schema.to_object(cfg)
    source = checkpoint.open_model(cfg.model.path)
    arch = source.arch
    check_parallel_layout(arch, cfg.parallel.tp, cfg.parallel.pp)
    check_sequence_length(arch, "eval.seq_length", cfg.eval.seq_length)
    if cfg.eval.reference and source.kind != "hf":
        raise MinitronError("eval.reference=true needs model.path to be a Hugging Face directory")
    tokenizer = load_tokenizer(source.carried_files)
    teacher_source = None
    if cfg.eval.teacher:
        teacher_source = heldout.open_teacher(cfg.eval.teacher, source, tokenizer, cfg.parallel.tp, cfg.parallel.pp,
                                              cfg.eval.seq_length)  # fmt: skip
    texts = read_texts(cfg.data.path, cfg.data.text_field)
    windows = heldout.make_windows(heldout.tokenize(texts, tokenizer), cfg.eval.seq_length, cfg.eval.max_windows)
    if cfg.output:
        check_not_an_input(cfg.output, [("model.path", cfg.model.path), ("data.path", cfg.data.path),
                                        ("eval.teacher", cfg.eval.teacher)])  # fmt: skip
    ctx = setup_distributed(cfg.parallel.tp, cfg.parallel.pp)
    try:
        with (output_lock(cfg.output) if cfg.output else contextlib.nullcontext()):
            dtype = source.build_dtype(cfg.model.dtype, for_compute=True)
            runtime.log(f"eval {source.path} on {cfg.data.path}: {len(windows)} windows x {cfg.eval.seq_length} "
                        f"tokens, "
                        f"TP={ctx.tp} PP={ctx.pp} DP={ctx.dp}, {str(dtype).replace('torch.', '')}")
            model = checkpoint.load_model(source, ctx.tp, ctx.pp, dtype)
            model.eval()
            teacher = None
            if teacher_source is not None:
                runtime.log(f"teacher {teacher_source.path}: KL(teacher || model) on the same windows")
                teacher = checkpoint.load_model(teacher_source, ctx.tp, ctx.pp, dtype)
                teacher.eval()
            start = time.perf_counter()
            result = heldout.megatron_heldout_loss(model, windows, cfg.eval.micro_batch_size, teacher=teacher)
            if teacher is not None:
                result["teacher"] = str(teacher_source.path)
            result["seconds"] = round(time.perf_counter() - start, 3)
            result.update(windows=len(windows), seq_length=cfg.eval.seq_length, dtype=str(dtype).replace("torch.", ""),
                          model=checkpoint.describe(source), tags=cfg.eval.tag_dict,
                          versions=runtime.versions())  # fmt: skip
            if cfg.eval.reference and ctx.is_main:
                reference = heldout.hf_heldout_loss(source.path, windows, cfg.eval.micro_batch_size)
                result["reference_loss"] = reference["loss"]
                result["abs_diff"] = abs(reference["loss"] - result["loss"])
            runtime.log(f"loss {result['loss']:.6f}  ppl {result['ppl']:.3f}  over {result['tokens']:,} tokens")
            if teacher is not None:
                runtime.log(f"KL(teacher || model) {result['kl']:.6f}  teacher loss {result['teacher_loss']:.6f}")
            runtime.report_result(result, cfg.output)
    finally:
        teardown_distributed()


if __name__ == "__main__":
    main()
