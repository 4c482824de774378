"""minitron importance: score embedding channels, MLP neurons, heads and layers on calibration data.

    minitron importance model.path=DIR data.path=FILE output=SCORES [calib.num_samples=1024] [calib.seq_length=4096]
    torchrun --nproc-per-node 2 $(which minitron) importance model.path=DIR data.path=FILE output=SCORES parallel.tp=2

DIR is an HF directory or a minitron Megatron checkpoint; FILE is .txt, .jsonl, .parquet or a directory of them,
cut into ``calib.num_samples`` consecutive windows of ``calib.seq_length`` tokens. The scores are
estimated on the sharded model at any TP/PP/DP (:mod:`minitron.prune.importance`) and SCORES gets
``importance.safetensors`` + ``importance.json`` (:class:`~minitron.prune.scores.ImportanceScores`),
``config.yaml`` and PNG plots, written into ``SCORES.partial`` and renamed into place at the end: a run
killed mid-way leaves SCORES as it was, and its rerun needs no ``overwrite=true``. The last stdout line is
one JSON object with the paths and timings.
"""

import hashlib
from pathlib import Path

from omegaconf import OmegaConf

from minitron import runtime
from minitron.config import schema
from minitron.errors import MinitronError
from minitron.models import checkpoint
from minitron.models.megatron_gpt import check_parallel_layout, check_sequence_length
from minitron.fsutil import check_not_an_input
from minitron.parallel import output_lock, setup_distributed, teardown_distributed
from minitron.prune import plots
from minitron.prune.calibration import calibration_windows, compute_importance
from minitron.prune.importance import resolve_window_sizes
from minitron.prune.scores import META_FILE, SCORES_FILE


@runtime.recipe("importance")
def main(cfg) -> None:
    resolved = OmegaConf.to_yaml(cfg, resolve=True)
    cfg = schema.to_object(cfg)
    source = checkpoint.open_model(cfg.model.path)
    arch, output = source.arch, Path(cfg.output)
    check_parallel_layout(arch, cfg.parallel.tp, cfg.parallel.pp)
    check_sequence_length(arch, "calib.seq_length", cfg.calib.seq_length)
    window_sizes = resolve_window_sizes(arch, cfg.importance.depth_metrics, cfg.importance.window_sizes)
    check_not_an_input(output, [("model.path", cfg.model.path), ("data.path", cfg.data.path)])
    if output.exists() and any(output.iterdir()) and not cfg.overwrite:
        raise MinitronError(f"output={output} already exists and is not empty; choose another or pass overwrite=true")
    windows = calibration_windows(source, cfg.data.path, cfg.data.text_field, cfg.calib.num_samples, cfg.calib.seq_length)

    ctx = setup_distributed(cfg.parallel.tp, cfg.parallel.pp)
    try:
        with output_lock(output):
            dtype = source.build_dtype(cfg.model.dtype, for_compute=True)
            runtime.log(f"importance of {source.path} on {cfg.data.path}: {len(windows)} windows x "
                        f"{cfg.calib.seq_length} "
                        f"tokens, TP={ctx.tp} PP={ctx.pp} DP={ctx.dp}, {str(dtype).replace('torch.', '')}")  # fmt: skip
            scores, load_seconds = compute_importance(source, windows, ctx, dtype, cfg.calib, cfg.importance,
                                                      cfg.importance.depth_metrics, window_sizes)  # fmt: skip
            scores.meta.update(data_path=str(cfg.data.path), model_path=str(source.path),
                               model_fingerprint=source.fingerprint(), dtype=str(dtype).replace("torch.", ""),
                               windows_sha256=hashlib.sha256(windows.numpy().tobytes()).hexdigest())  # fmt: skip
            result = {"output": str(output), "scores": str(output / SCORES_FILE), "meta": str(output / META_FILE)}
            # checked again under the lock; no minitron.json holds the key "importance", so begin_output never
            # finds it up to date (None)
            staging = checkpoint.begin_output(output, "importance", overwrite=cfg.overwrite)
            with checkpoint.staged(staging):
                if ctx.is_main:
                    scores.save(staging)
                    (staging / "config.yaml").write_text(resolved)
                    if cfg.importance.plots:
                        result["plots"] = [str(output / path.name) for path in plots.save_plots(scores, staging)]
            checkpoint.finish_output(staging, output)
            result.update(base_loss=scores.base_loss, windows=len(windows), seq_length=cfg.calib.seq_length,
                          load_seconds=round(load_seconds, 3), seconds=scores.meta["seconds"])  # fmt: skip
            seconds, passes = scores.meta["seconds"]["total"], scores.meta["forward_passes"]
            runtime.log(f"full-model loss {scores.base_loss:.4f}; scores in {output} ({seconds:.1f} s, "
                        f"{passes} passes)")
            runtime.print_result(result)
    finally:
        teardown_distributed()


if __name__ == "__main__":
    main()
