"""minitron importance: score embedding channels, MLP neurons, heads and layers on calibration data.

    minitron importance model.path=DIR data.path=FILE output=SCORES [calib.num_samples=1024] [calib.seq_length=4096]
    torchrun --nproc-per-node 2 $(which minitron) importance model.path=DIR data.path=FILE output=SCORES parallel.tp=2

DIR is an HF directory or a minitron Megatron checkpoint; FILE is .txt or .jsonl (field ``text``),
cut into ``calib.num_samples`` consecutive windows of ``calib.seq_length`` tokens. The scores are
estimated on the sharded model at any TP/PP/DP (:mod:`minitron.prune.importance`) and SCORES gets
``importance.safetensors`` + ``importance.json`` (:class:`~minitron.prune.scores.ImportanceScores`),
``config.yaml`` and PNG plots. The last stdout line is one JSON object with the paths and timings.
"""

import hashlib
import time
from pathlib import Path

import hydra
import torch
from omegaconf import OmegaConf

from minitron import runtime
from minitron.config import schema
from minitron.errors import MinitronError
from minitron.eval import heldout
from minitron.models import checkpoint
from minitron.models.megatron_gpt import build_gpt_model, check_parallel_layout
from minitron.models.tokenizer import load_tokenizer
from minitron.parallel import setup_distributed, teardown_distributed
from minitron.prune import plots
from minitron.prune.importance import estimate_importance, resolve_window_sizes
from minitron.prune.scores import META_FILE, SCORES_FILE

schema.register()


def calibration_windows(cfg, source) -> torch.Tensor:
    """``[calib.num_samples, calib.seq_length]`` token windows of the calibration text."""
    texts = heldout.read_texts(cfg.data.path, cfg.data.text_field)
    token_ids = heldout.tokenize(texts, load_tokenizer(source.carried_files))
    available = len(token_ids) // cfg.calib.seq_length
    if available < cfg.calib.num_samples:
        raise MinitronError(
            f"calibration data shorter than asked: data.path={cfg.data.path} holds {len(token_ids):,} tokens, "
            f"{available} windows of calib.seq_length={cfg.calib.seq_length}, but calib.num_samples="
            f"{cfg.calib.num_samples}; lower calib.num_samples or calib.seq_length, or use more text"
        )
    return heldout.make_windows(token_ids, cfg.calib.seq_length, cfg.calib.num_samples)


@hydra.main(config_path=schema.CONF_DIR, config_name="importance", version_base=None)
@runtime.stage
def main(cfg) -> None:
    resolved = OmegaConf.to_yaml(cfg, resolve=True)
    cfg = schema.to_object(cfg)
    source = checkpoint.open_model(cfg.model.path)
    arch, output = source.arch, Path(cfg.output)
    check_parallel_layout(arch, cfg.parallel.tp, cfg.parallel.pp)
    if cfg.calib.seq_length > arch.max_position_embeddings:
        raise MinitronError(
            f"calib.seq_length={cfg.calib.seq_length} exceeds the model's max_position_embeddings="
            f"{arch.max_position_embeddings}; use calib.seq_length<={arch.max_position_embeddings}"
        )
    if arch.sliding_window and cfg.calib.seq_length > arch.sliding_window:
        raise MinitronError(
            f"calib.seq_length={cfg.calib.seq_length} exceeds the model's sliding_window={arch.sliding_window}, "
            "which minitron does not implement; use calib.seq_length<=sliding_window"
        )
    window_sizes = resolve_window_sizes(arch, cfg.importance.depth_metrics, cfg.importance.window_sizes)
    if output.exists() and any(output.iterdir()) and not cfg.overwrite:
        raise MinitronError(f"output={output} already exists and is not empty; choose another or pass overwrite=true")
    windows = calibration_windows(cfg, source)

    ctx = setup_distributed(cfg.parallel.tp, cfg.parallel.pp)
    try:
        dtype = cfg.model.torch_dtype(source.dtype, for_compute=True)
        runtime.log(f"importance of {source.path} on {cfg.data.path}: {len(windows)} windows x {cfg.calib.seq_length} "
                    f"tokens, TP={ctx.tp} PP={ctx.pp} DP={ctx.dp}, {str(dtype).replace('torch.', '')}")  # fmt: skip
        start = time.perf_counter()
        # the local layer spec (SDPA attention) on any device: the hooks need the norms as modules
        model = build_gpt_model(arch, ctx.tp, ctx.pp, dtype, attention="sdpa")
        (checkpoint.load_hf_weights if source.kind == "hf" else checkpoint.load_megatron_weights)(model, source)
        model.eval()
        load_seconds = time.perf_counter() - start
        scores = estimate_importance(
            model, arch, windows, cfg.calib.micro_batch_size,
            aggregation=(cfg.importance.batch_aggregation, cfg.importance.seq_aggregation),
            depth_metrics=cfg.importance.depth_metrics, window_sizes=window_sizes,
            loss_num_samples=cfg.importance.loss_num_samples,
        )  # fmt: skip
        scores.meta.update(data_path=str(cfg.data.path), model_path=str(source.path),
                           model_fingerprint=source.fingerprint(), dtype=str(dtype).replace("torch.", ""),
                           windows_sha256=hashlib.sha256(windows.numpy().tobytes()).hexdigest(),
                           versions=runtime.versions())  # fmt: skip
        result = {"output": str(output), "scores": str(output / SCORES_FILE), "meta": str(output / META_FILE)}
        if ctx.is_main:
            scores.save(output)
            (output / "config.yaml").write_text(resolved)
            if cfg.importance.plots:
                result["plots"] = [str(path) for path in plots.save_plots(scores, output)]
        torch.distributed.barrier()
        result.update(base_loss=scores.base_loss, windows=len(windows), seq_length=cfg.calib.seq_length,
                      load_seconds=round(load_seconds, 3), seconds=scores.meta["seconds"])  # fmt: skip
        seconds, passes = scores.meta["seconds"]["total"], scores.meta["forward_passes"]
        runtime.log(f"full-model loss {scores.base_loss:.4f}; scores in {output} ({seconds:.1f} s, {passes} passes)")
        runtime.print_result(result)
    finally:
        teardown_distributed()


if __name__ == "__main__":
    main()
