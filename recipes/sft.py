"""minitron sft: supervised fine-tuning on chat data, answer tokens only, with the training engine.

    minitron data prepare data.format=sft data.path=CHAT.jsonl model.path=DIR output=PREFIX data.seq_length=512
    minitron sft model.path=DIR data.path=PREFIX output=RUN train.steps=N [data.pack=true] [train.seq_length=512]
    torchrun --nproc-per-node 2 $(which minitron) sft ... parallel.tp=2
    minitron sft model.path=RUN/final data.path=PREFIX2 output=RUN2 ...   # a second SFT stage from the first
    minitron convert model.path=RUN/final output=HF_DIR                  # the fine-tuned model as Hugging Face

The loss is the cross-entropy summed over the answer tokens of the global batch divided by their number
(the same for any micro-batching, TP, PP or DP). ``data.pack=true`` packs consecutive examples into one
sequence with a block-diagonal causal mask; else each example is padded. Running the same command again
resumes from the newest valid checkpoint in RUN/checkpoints. The last stdout line is one JSON object.
"""

import os

from omegaconf import OmegaConf

from minitron import runtime
from minitron.align import checks
from minitron.align.data import SFTDataset
from minitron.config import schema
from minitron.fsutil import check_not_an_input
from minitron.models import checkpoint
from minitron.parallel import output_lock, setup_distributed, teardown_distributed
from minitron.training import loop, rundir
from minitron.training.data import TrainData
from minitron.training.engine import build_training_parts


@runtime.recipe("sft")
def main(cfg) -> None:
    resolved, run_config = OmegaConf.to_yaml(cfg, resolve=True), OmegaConf.to_container(cfg, resolve=True)
    cfg = schema.to_object(cfg)
    source = checks.open_source("model.path", cfg.model.path)
    meta = checks.check_align_inputs(cfg, "sft", source, int(os.environ.get("WORLD_SIZE", "1")))  # writes nothing
    check_not_an_input(cfg.output, [("model.path", cfg.model.path)])
    ctx = setup_distributed(cfg.parallel.tp, cfg.parallel.pp, cfg.train.seed)
    try:
        with output_lock(cfg.output):
            trains = rundir.check_rerun(cfg.output, run_config)  # a finished run is immutable
            dtype = source.build_dtype(cfg.model.dtype, for_compute=True)
            runtime.log(f"sft {source.path} on {cfg.data.path} ({meta['num_examples']:,} examples, "
                        f"{'packed' if cfg.data.pack else 'padded'}): {cfg.train.steps} steps x "
                        f"{cfg.train.global_batch_size} x {cfg.train.seq_length} tokens, TP={ctx.tp} PP={ctx.pp} "
                        f"DP={ctx.dp}, {str(dtype).replace('torch.', '')}, output {cfg.output}")  # fmt: skip
            model = checkpoint.load_model(source, ctx.tp, ctx.pp, dtype)
            run_dir = rundir.prepare(cfg.output, resolved, record=trains)
            data = TrainData(train=SFTDataset(cfg.data.path, cfg.train.seq_length, pack=cfg.data.pack))
            parts = build_training_parts(model, cfg.train)
            result = loop.train(parts, data, cfg, run_dir, source, run_config=run_config)
            loop.report(result, "answer-token loss", "model")
    finally:
        teardown_distributed()


if __name__ == "__main__":
    main()
