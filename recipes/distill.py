"""minitron distill: train a (pruned) student to match a frozen teacher's logits on a tokenized corpus.

    minitron distill teacher.path=DIR student.path=DIR data.path=PREFIX output=RUN train.steps=N
        [distill.loss=forward_kl|reverse_kl|topk distill.topk=K distill.temperature=1.0
         distill.lm_loss_weight=0 distill.hidden_pairs=[[s,t],...] distill.hidden_loss=cosine|mse]
    torchrun --nproc-per-node 2 $(which minitron) distill ... parallel.pp=2
    minitron convert model.path=RUN/final output=HF_DIR           # the distilled student as Hugging Face

Teacher and student (HF directories or minitron Megatron checkpoints) must share the tokenizer; both
are built in the same TP/PP layout and dtype (student.dtype). PREFIX is a dataset from `minitron data
prepare` made with that tokenizer. The default loss is the paper's: KL(teacher || student) on the
logits at temperature 1, no cross-entropy. Running the same command again resumes from the newest
valid checkpoint in RUN/checkpoints (the student's training state; the teacher is reloaded, and must
be the one the run started with: RUN/teacher.json). RUN also
holds config.yaml, versions.json, metrics.jsonl (loss = total, kd = logit loss, and hidden / lm when
on) and, at the end, final/ (the student). The last stdout line is one JSON object with the result.
"""

import os

from omegaconf import OmegaConf

from minitron import runtime
from minitron.config import schema
from minitron.distill import checks
from minitron.distill.model import load_distillation
from minitron.fsutil import check_not_an_input
from minitron.parallel import output_lock, setup_distributed, teardown_distributed
from minitron.parallel.scale import resolve_for_run
from minitron.training import loop, rundir
from minitron.training.data import build_train_data
from minitron.training.engine import build_training_parts


@runtime.recipe("distill")
def main(cfg) -> None:
    resolved, run_config = OmegaConf.to_yaml(cfg, resolve=True), OmegaConf.to_container(cfg, resolve=True)
    cfg = schema.to_object(cfg)
    student, teacher = checks.open_models(cfg)
    checks.check_distill_inputs(cfg, student, teacher, int(os.environ.get("WORLD_SIZE", "1")))  # writes nothing
    checks.check_same_teacher(cfg.output, teacher)
    checks.check_same_hidden_pairs(cfg)
    scale = resolve_for_run(cfg.train, cfg.parallel, int(os.environ.get("WORLD_SIZE", "1")), student.arch.num_layers,
                            no_sequence_parallel="distill.hidden_pairs" if cfg.distill.hidden_pairs else None)  # fmt: skip
    check_not_an_input(cfg.output, [("teacher.path", cfg.teacher.path), ("student.path", cfg.student.path)])
    ctx = setup_distributed(cfg.parallel.tp, cfg.parallel.pp, cfg.train.seed)
    try:
        with output_lock(cfg.output):
            trains = rundir.check_rerun(cfg.output, run_config)  # a finished run is immutable
            dtype = student.build_dtype(cfg.student.dtype, for_compute=True)
            runtime.log(f"distill {teacher.path} -> {student.path} on {cfg.data.path}: {cfg.distill.loss} "
                        f"(T={cfg.distill.temperature}), {cfg.train.steps} steps x {cfg.train.global_batch_size} x "
                        f"{cfg.train.seq_length} tokens, TP={ctx.tp} PP={ctx.pp} DP={ctx.dp}, "
                        f"{str(dtype).replace('torch.', '')}, scale settings on: {scale.summary()}, "
                        f"output {cfg.output}")  # fmt: skip
            run_dir = rundir.prepare(cfg.output, resolved, record=trains)
            if trains:
                checks.record_teacher(run_dir, teacher)
            data = build_train_data(cfg, student, run_dir)
            distill = load_distillation(student, teacher, ctx.tp, ctx.pp, dtype, cfg.distill, cfg.train.seed, scale)
            parts = build_training_parts(distill.student, cfg.train, scale)
            result = loop.train(parts, data, cfg, run_dir, student, run_config=run_config,
                                functions=distill.step_functions(), export=distill.export_final)  # fmt: skip
            loop.report(result, "distillation loss", "student")
    finally:
        teardown_distributed()


if __name__ == "__main__":
    main()
