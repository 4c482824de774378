"""minitron rewards: held-out preference accuracy of an aligned policy against its reference.

    minitron data prepare data.format=preference data.path=HELDOUT.jsonl model.path=DIR output=PAIRS data.seq_length=512
    minitron rewards model.path=ALIGNED reference.path=START data.path=PAIRS [align.beta=0.1 rewards.max_pairs=200]

For each held-out pair the implicit rewards are beta x (log pi(y|x) - log pi_ref(y|x)) of the chosen and the
rejected answer (answer tokens summed, or averaged with align.average_logps=true), exactly as `minitron dpo` logs
them during training; rewards/accuracies is the share of pairs whose chosen reward is the larger (a tie counts
0), rewards/margins their mean difference. The same forward passes as training (any TP x PP; DP splits the
pairs), no gradients. The last stdout line is one JSON object (also written to output=FILE).
"""


from minitron import runtime
from minitron.align import checks
from minitron.align.data import PreferenceDataset, read_chat_sidecar
from minitron.align.preference import REPORTS, load_preference
from minitron.config import schema
from minitron.errors import MinitronError
from minitron.fsutil import check_not_an_input
from minitron.models.megatron_gpt import check_parallel_layout, check_sequence_length
from minitron.parallel import setup_distributed, teardown_distributed
from minitron.training.data import micro_batches
from minitron.eval.forward import run_schedule
from minitron.training.step import _global_means


@runtime.recipe("rewards")
def main(cfg) -> None:
    cfg = schema.to_object(cfg)
    policy = checks.open_source("model.path", cfg.model.path)
    reference = checks.open_source("reference.path", cfg.reference.path or cfg.model.path)
    check_sequence_length(policy.arch, "rewards.seq_length", cfg.rewards.seq_length)
    check_parallel_layout(policy.arch, cfg.parallel.tp, cfg.parallel.pp)
    checks.check_reference(policy, reference, cfg.parallel.tp, cfg.parallel.pp)
    if cfg.data.path is None:
        raise MinitronError("data.path is required: held-out pairs from `minitron data prepare data.format=preference`")
    read_chat_sidecar(cfg.data.path, "preference")
    if cfg.output:
        check_not_an_input(cfg.output, [("model.path", cfg.model.path), ("reference.path", reference.path)])
    dataset = PreferenceDataset(cfg.data.path, cfg.rewards.seq_length)
    ctx = setup_distributed(cfg.parallel.tp, cfg.parallel.pp)
    try:
        per_pass = cfg.rewards.micro_batch_size * ctx.dp
        pairs = min(len(dataset), cfg.rewards.max_pairs or len(dataset)) // per_pass * per_pass
        if pairs == 0:
            raise MinitronError(f"data.path={cfg.data.path}: {len(dataset)} pairs, fewer than one pass of "
                                f"rewards.micro_batch_size x DP = {per_pass}; lower rewards.micro_batch_size")  # fmt: skip
        dtype = policy.build_dtype(cfg.model.dtype, for_compute=True)
        model = load_preference(policy, reference, ctx.tp, ctx.pp, dtype, cfg.align, seed=0)
        model.policy.eval()
        functions = model.step_functions()
        batches = micro_batches(dataset, per_pass, cfg.rewards.micro_batch_size, 0)
        runtime.log(f"rewards of {policy.path} against {reference.path} on {pairs:,} held-out pairs of "
                    f"{cfg.data.path} (beta {cfg.align.beta}, TP={ctx.tp} PP={ctx.pp} DP={ctx.dp})")  # fmt: skip
        import torch

        outputs = []
        with torch.no_grad():
            for _ in range(pairs // per_pass):
                outputs += run_schedule(model.policy, batches, 1, cfg.rewards.seq_length, cfg.rewards.micro_batch_size,
                                        functions.forward_step, True, functions.adjust_tensor_shapes)  # fmt: skip
        means, counted = _global_means(outputs, REPORTS)
        model.close()
        result = {key: means[key] for key in REPORTS if key not in ("loss", "preference", "sft")}
        result.update(pairs=counted, beta=cfg.align.beta, model=str(policy.path), reference=str(reference.path),
                      data=str(cfg.data.path))  # fmt: skip
        runtime.log(f"reward accuracy {result['rewards/accuracies']:.4f}, margin {result['rewards/margins']:.4f} "
                    f"on {counted:,} pairs")  # fmt: skip
        runtime.report_result(result, cfg.output)
    finally:
        teardown_distributed()


if __name__ == "__main__":
    main()
