"""minitron dpo: preference optimisation (DPO, IPO, RPO) of a policy against a frozen reference, in rounds.

    minitron data prepare data.format=preference data.path=PAIRS.jsonl model.path=DIR output=PREFIX data.seq_length=512
    minitron dpo model.path=DIR data.path=PREFIX output=RUN train.steps=N [align.loss=dpo|ipo|rpo_sq|rpo_bwd_kl|rpo_fwd_kl
                 align.beta=0.1 align.eta=1.0 align.sft_weight=0 align.average_logps=false align.rounds=1
                 reference.path=REF]
    torchrun --nproc-per-node 2 $(which minitron) dpo ... parallel.pp=2
    minitron convert model.path=RUN/final output=HF_DIR      # rounds > 1: RUN/round-N/final

The reference (default: model.path) is held frozen in the policy's TP/PP layout (a second model shard:
:mod:`minitron.align.preference` gives the memory figures). With ``align.rounds=N`` round k runs in
RUN/round-k, starting from and referenced to round k-1's final model (round 1: model.path and reference.path);
finished rounds are skipped and an interrupted one resumes. Batch sizes count pairs. metrics.jsonl logs
rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins, logps/chosen and logps/rejected.
The last stdout line is one JSON object (the last round's result, with ``rounds``).
"""

import os
from pathlib import Path

from omegaconf import OmegaConf

from minitron import runtime
from minitron.align import checks
from minitron.align.data import PreferenceDataset
from minitron.align.preference import load_preference
from minitron.config import schema
from minitron.fsutil import check_not_an_input
from minitron.models.checkpoint import open_model
from minitron.parallel import output_lock, setup_distributed, teardown_distributed
from minitron.training import loop, rundir
from minitron.training.data import TrainData
from minitron.training.engine import build_training_parts


def round_dirs(output, rounds: int) -> list[Path]:
    """The run directory of each round: OUTPUT itself for one round, else OUTPUT/round-1 ... round-N."""
    return [Path(output)] if rounds == 1 else [Path(output) / f"round-{k}" for k in range(1, rounds + 1)]


@runtime.recipe("dpo")
def main(cfg) -> None:
    resolved, run_config = OmegaConf.to_yaml(cfg, resolve=True), OmegaConf.to_container(cfg, resolve=True)
    cfg = schema.to_object(cfg)
    policy = checks.open_source("model.path", cfg.model.path)
    reference = checks.open_source("reference.path", cfg.reference.path or cfg.model.path)
    meta = checks.check_align_inputs(cfg, "preference", policy, int(os.environ.get("WORLD_SIZE", "1")))
    checks.check_reference(policy, reference, cfg.parallel.tp, cfg.parallel.pp)  # writes nothing before here
    check_not_an_input(cfg.output, [("model.path", cfg.model.path), ("reference.path", reference.path)])
    ctx = setup_distributed(cfg.parallel.tp, cfg.parallel.pp, cfg.train.seed)
    try:
        with output_lock(cfg.output):
            dtype = policy.build_dtype(cfg.model.dtype, for_compute=True)
            settings = cfg.align
            for number, run_dir in enumerate(round_dirs(cfg.output, settings.rounds), 1):
                if number > 1:  # round k starts from, and is referenced to, round k-1's output
                    policy = reference = open_model(round_dirs(cfg.output, settings.rounds)[number - 2] / "final")
                trains = rundir.check_rerun(run_dir, run_config)  # a finished round is immutable
                runtime.log(f"dpo round {number}/{settings.rounds}: {settings.loss} (beta {settings.beta}) of "
                            f"{policy.path} against {reference.path} on {cfg.data.path} ({meta['num_examples']:,} "
                            f"pairs): {cfg.train.steps} steps x {cfg.train.global_batch_size} pairs x "
                            f"{cfg.train.seq_length} tokens, TP={ctx.tp} PP={ctx.pp} DP={ctx.dp}, "
                            f"{str(dtype).replace('torch.', '')}, output {run_dir}")  # fmt: skip
                run_dir = rundir.prepare(run_dir, resolved, record=trains)
                data = TrainData(train=PreferenceDataset(cfg.data.path, cfg.train.seq_length))
                model = load_preference(policy, reference, ctx.tp, ctx.pp, dtype, settings, cfg.train.seed)
                parts = build_training_parts(model.policy, cfg.train)
                result = loop.train(parts, data, cfg, run_dir, policy, run_config=run_config,
                                    functions=model.step_functions(), export=model.export_final)  # fmt: skip
                model.close()
            loop.report({**result, "rounds": settings.rounds}, f"{settings.loss} loss", "policy")
    finally:
        teardown_distributed()


if __name__ == "__main__":
    main()
