"""minitron train: train a model on a tokenized corpus with Megatron-Core (teacher correction, continued pretraining).

    minitron train model.path=DIR data.path=PREFIX output=RUN train.steps=N [train=teacher_correction]
    minitron train model.path=DIR model.init=random data.path=PREFIX output=RUN   # DIR's architecture, from scratch
    torchrun --nproc-per-node 2 $(which minitron) train model.path=DIR data.path=PREFIX output=RUN parallel.tp=2
    minitron convert model.path=RUN/final output=HF_DIR          # the trained model as Hugging Face

DIR is an HF directory or a minitron Megatron checkpoint; PREFIX a dataset from `minitron data prepare`
(PREFIX.bin/.idx). With model.init=random only DIR's architecture, tokenizer and HF config are used: the
weights start from Megatron's initialisation seeded by train.seed (the "same tokens, random init"
baseline). Running the same command again resumes from the newest valid checkpoint in
RUN/checkpoints, in any TP/PP/DP layout. RUN also holds config.yaml, versions.json, metrics.jsonl and,
at the end, final/ (a minitron Megatron checkpoint). The last stdout line is one JSON object with the
final loss, validation loss and paths.
"""

import os

from omegaconf import OmegaConf

from minitron import runtime
from minitron.config import schema
from minitron.models import checkpoint
from minitron.fsutil import check_not_an_input
from minitron.parallel import output_lock, setup_distributed, teardown_distributed
from minitron.parallel.scale import resolve_for_run
from minitron.training import checks, loop, rundir
from minitron.training.data import build_train_data
from minitron.training.engine import build_training_parts


@runtime.recipe("train")
def main(cfg) -> None:
    resolved, run_config = OmegaConf.to_yaml(cfg, resolve=True), OmegaConf.to_container(cfg, resolve=True)
    cfg = schema.to_object(cfg)
    source = checkpoint.open_model(cfg.model.path, init=cfg.model.init)
    checks.check_train_inputs(cfg, source, int(os.environ.get("WORLD_SIZE", "1")))  # writes nothing
    scale = resolve_for_run(cfg.train, cfg.parallel, int(os.environ.get("WORLD_SIZE", "1")), source.arch.num_layers)
    check_not_an_input(cfg.output, [("model.path", cfg.model.path)])
    ctx = setup_distributed(cfg.parallel.tp, cfg.parallel.pp, cfg.train.seed)
    try:
        with output_lock(cfg.output):
            trains = rundir.check_rerun(cfg.output, run_config)  # a finished run is immutable
            dtype = source.build_dtype(cfg.model.dtype, for_compute=True)
            model_name = f"{source.path} (its architecture, random init)" if source.init == "random" else source.path
            runtime.log(f"train {model_name} on {cfg.data.path}: {cfg.train.steps} steps x "
                        f"{cfg.train.global_batch_size} "
                        f"x {cfg.train.seq_length} tokens, TP={ctx.tp} PP={ctx.pp} DP={ctx.dp}, "
                        f"{str(dtype).replace('torch.', '')}, scale settings on: {scale.summary()}, "
                        f"output {cfg.output}")  # fmt: skip
            # first, while the RNG is as train.seed left it: a random init is then the same in every run
            model = checkpoint.load_model(source, ctx.tp, ctx.pp, dtype, scale)  # random init: no weights read
            run_dir = rundir.prepare(cfg.output, resolved, record=trains)
            data = build_train_data(cfg, source, run_dir)
            parts = build_training_parts(model, cfg.train, scale)
            result = loop.train(parts, data, cfg, run_dir, source, run_config=run_config)
            loop.report(result, "loss", "model")
    finally:
        teardown_distributed()


if __name__ == "__main__":
    main()
