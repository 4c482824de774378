"""minitron evaluate: lm-eval tasks (MMLU, HellaSwag, Winogrande, ARC, ...) on the Megatron engine, offline.

    minitron assets fetch benchmarks                                   # once: the benchmark data
    minitron evaluate model.path=DIR output=OUT eval.tasks=[mmlu,winogrande,hellaswag,arc_challenge]
    minitron evaluate model.path=DIR output=OUT eval.tasks=[winogrande] eval.num_fewshot=5 eval.limit=200
    torchrun --nproc-per-node 2 $(which minitron) evaluate model.path=DIR output=OUT parallel.tp=2
    minitron evaluate model.path=HF_DIR output=OUT eval.backend=hf     # lm-eval's own hf backend, same tasks

DIR is an HF directory or a minitron Megatron checkpoint. The tasks are lm-eval 0.4.13's own (prompts,
preprocessing, metrics), reading the benchmarks asset (see minitron.eval.lm_tasks: which split is scored,
which few-shot pool is used). OUT gets lm-eval's results.json (plus a `minitron` section), results.md and
samples_<task>.jsonl. A table (task, metric, value, stderr, items, shots) is printed; the last stdout line
is one JSON object with every task's main metric under "results".
"""

import time

from omegaconf import OmegaConf

from minitron import runtime
from minitron.config import schema
from minitron.eval import harness, lm_tasks
from minitron.models import checkpoint
from minitron.models.megatron_gpt import check_parallel_layout
from minitron.models.tokenizer import load_tokenizer
from minitron.parallel import output_lock, setup_distributed, teardown_distributed


@runtime.recipe("evaluate")
def main(cfg) -> None:
    config = OmegaConf.to_container(cfg, resolve=True)
    cfg = schema.to_object(cfg)
    harness.go_offline()
    lm_tasks.check_task_names(cfg.eval.tasks)
    data_dir, fetched = harness.benchmarks_dir(cfg.eval.data_dir)
    lm_tasks.check_benchmark_files(data_dir, cfg.eval.tasks, fetched)
    out = harness.output_dir(cfg.output, cfg.overwrite)
    source = checkpoint.open_model(cfg.model.path)
    check_parallel_layout(source.arch, cfg.parallel.tp, cfg.parallel.pp)
    tokenizer = load_tokenizer(source.carried_files)
    harness.check_tokenizer(source, tokenizer)
    manager = lm_tasks.task_manager(data_dir)
    shots = {name: cfg.eval.shots(name, lm_tasks.TASKS[name].default_shots) for name in cfg.eval.tasks}
    limits = {name: cfg.eval.limit_of(name) for name in cfg.eval.tasks}
    tasks = lm_tasks.load_tasks(manager, cfg.eval.tasks, shots, limits, cfg.eval.max_gen_toks)
    ctx = setup_distributed(cfg.parallel.tp, cfg.parallel.pp) if cfg.eval.backend == "megatron" else None
    try:
        with output_lock(cfg.output):  # one writer per output directory
            runtime.log(f"evaluate {source.path} ({cfg.eval.backend} backend"
                        + (f", TP={ctx.tp} PP={ctx.pp} DP={ctx.dp})" if ctx else ")") + ": "
                        + ", ".join(f"{t.name} {t.shots}-shot x {t.items}" for t in tasks))  # fmt: skip
            lm = harness.megatron_lm(cfg, source, tokenizer, ctx) if ctx else harness.hf_lm(cfg, source)
            start = time.perf_counter()
            results = harness.evaluate(lm, tasks, manager, cfg.eval.seed, cfg.eval.log_samples)
            seconds = round(time.perf_counter() - start, 3)
            if results is None or not runtime.is_main_process():
                return
            summary = harness.summarize(results, tasks)
            record = {"config": config, "versions": runtime.versions(), "tasks": summary, "seconds": seconds,
                      "truncated": getattr(lm, "truncated", None), "benchmarks_dir": str(data_dir)}  # fmt: skip
            harness.write_outputs(out, results, record)
            print(harness.table(summary), flush=True)
            runtime.log(f"done in {seconds:.1f}s: {out}/results.json, results.md, samples_<task>.jsonl")
            runtime.print_result({"results": {name: row["value"] for name, row in summary.items()}, "tasks": summary,
                                  "backend": cfg.eval.backend, "output": str(out), "seconds": seconds})  # fmt: skip
    finally:
        if ctx:
            teardown_distributed()


if __name__ == "__main__":
    main()
