"""``minitron evaluate``'s mechanics: offline lm-eval, the two backends, the checks, the outputs.

Output directory (written by global rank 0, staged in ``<output>.partial`` and renamed when complete)::

    results.json          lm-eval's results (every task, group and subtask; configs, versions, n-samples)
                          plus ``minitron``: the command's config, versions and the per-task summary
    results.md            lm-eval's own table of every task and subtask
    samples_<task>.jsonl  lm-eval's per-sample log of each leaf task (prompt arguments, responses, metrics)

The summary per requested task is its main metric (:attr:`TaskSpec.metric`) with stderr, the number of
documents it rests on, the shots and the few-shot pool.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Optional

from minitron.errors import MinitronError
from minitron.eval import lm_tasks


def go_offline() -> None:
    """No hub access (datasets, transformers), quiet lm-eval/datasets logging; call before importing them."""
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name in ("lm_eval", "datasets", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


def benchmarks_dir(data_dir: Optional[str]) -> tuple[Path, bool]:
    """The directory of the benchmark files and whether it is the fetched asset."""
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise MinitronError(f"eval.data_dir={path}: no such directory (unset it to use `{lm_tasks.FETCH}`'s files)")
        return path, False
    from minitron.assets import asset_path

    return asset_path("benchmarks"), True


def check_tokenizer(source, tokenizer) -> None:
    """The tokenizer belongs to the model: every token id fits the embedding, and it has an EOS or BOS token."""
    size = len(tokenizer)
    if size > source.arch.vocab_size:
        raise MinitronError(
            f"model.path={source.path}: the tokenizer has {size} tokens but the model's vocab_size is "
            f"{source.arch.vocab_size}; the tokenizer files do not belong to these weights (copy the model's own)"
        )
    if tokenizer.eos_token_id is None and tokenizer.bos_token_id is None:
        raise MinitronError(
            f"model.path={source.path}: the tokenizer has neither an EOS nor a BOS token; lm-eval needs one"
        )


def output_dir(output, overwrite: bool) -> Path:
    """Refuse an existing output (unless ``overwrite``); nothing is created yet."""
    path = Path(output).expanduser()
    if path.is_file() or (path.is_dir() and any(path.iterdir()) and not overwrite):
        raise MinitronError(f"output={path} already exists; choose a new directory or pass overwrite=true")
    return path


def megatron_lm(cfg, source, tokenizer, ctx):
    """lm-eval model on this rank's shard of ``source`` in the layout of ``ctx``."""
    from minitron.eval.megatron_lm import MegatronLM
    from minitron.models import checkpoint

    dtype = source.build_dtype(cfg.model.dtype, for_compute=True)
    model = checkpoint.load_model(source, ctx.tp, ctx.pp, dtype).eval()
    return MegatronLM(model, tokenizer, source.arch.max_position_embeddings, cfg.eval.batch_size,
                      cfg.eval.allow_truncation, cfg.eval.max_gen_toks, model_name=str(source.path))  # fmt: skip


def hf_lm(cfg, source):
    """lm-eval's own ``hf`` backend (HFLM) on the Hugging Face directory of ``source`` (one process)."""
    if source.kind != "hf":
        raise MinitronError(
            "eval.backend=hf needs model.path to be a Hugging Face directory (`minitron convert` makes one)"
        )
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise MinitronError("eval.backend=hf runs in one process; start it without torchrun")
    import torch
    from lm_eval.models.huggingface import HFLM

    dtype = source.build_dtype(cfg.model.dtype, for_compute=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return HFLM(pretrained=str(source.path), dtype=dtype, batch_size=cfg.eval.batch_size, device=device)


def evaluate(lm, tasks: list, manager, seed: int, log_samples: bool) -> Optional[dict]:
    """Run lm-eval on the loaded tasks; results on the process that reports them (rank 0), else None."""
    from lm_eval.evaluator import simple_evaluate

    return simple_evaluate(
        model=lm, tasks=[t.obj for t in tasks], task_manager=manager, samples=lm_tasks.samples_of(tasks),
        log_samples=log_samples, random_seed=0, numpy_random_seed=seed, torch_random_seed=seed,
        fewshot_random_seed=seed,
    )  # fmt: skip


def summarize(results: dict, tasks: list) -> dict:
    """Per requested task: main metric, value, stderr, documents, shots, few-shot pool."""
    summary = {}
    for task in tasks:
        metric, _, filter_name = task.spec.metric.partition(",")
        key = f"{metric},{filter_name or 'none'}"
        row = results["results"][task.name]
        stderr = row.get(f"{metric}_stderr,{filter_name or 'none'}")
        summary[task.name] = {
            "metric": metric if not filter_name else task.spec.metric, "value": row[key],
            "stderr": stderr if isinstance(stderr, (int, float)) else None, "items": task.items,
            "num_fewshot": task.shots, "fewshot_pool": task.spec.pool if task.shots else None,
        }  # fmt: skip
    return summary


def table(summary: dict) -> str:
    """The summary as a plain-text table: task, metric, value, stderr, items, shots."""
    lines = [f"{'task':<16} {'metric':<26} {'value':>8} {'stderr':>8} {'items':>7} {'shots':>5}"]
    for name, row in summary.items():
        stderr = f"{row['stderr']:.4f}" if row["stderr"] is not None else "-"
        lines.append(
            f"{name:<16} {row['metric']:<26} {row['value']:>8.4f} {stderr:>8} {row['items']:>7} {row['num_fewshot']:>5}"
        )
    return "\n".join(lines)


def write_outputs(out: Path, results: dict, minitron_record: dict) -> None:
    """results.json, results.md and samples_<task>.jsonl, written to ``<out>.partial`` then renamed into place."""
    from lm_eval.utils import handle_non_serializable, make_table

    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    samples = results.pop("samples", None) or {}
    results["minitron"] = minitron_record
    (staging / "results.json").write_text(json.dumps(results, indent=2, default=handle_non_serializable) + "\n")
    markdown = make_table(results) + ("\n" + make_table(results, "groups") if results.get("groups") else "")
    (staging / "results.md").write_text(markdown)
    for task_name, rows in samples.items():
        with open(staging / f"samples_{task_name}.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, default=handle_non_serializable, ensure_ascii=False) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
