"""Policy + frozen reference for the training loop: DPO/IPO/RPO on pairs, in any TP x PP x DP layout.

The wiring is distillation's (:class:`minitron.distill.model.DistillationModel`: the frozen model runs
beside the trained one in every micro-batch, the two hidden states travel together between pipeline
stages); here the frozen model is the reference policy and the loss is a preference loss.

A micro-batch holds ``m`` whole pairs: samples of ``[2, s]`` (chosen, rejected) collated to ``[m, 2, s]``
and run as ``[2m, s]`` rows ``c_0, r_0, c_1, r_1, ...``; between pipeline stages the tensor is
``[s, 2m, h_policy + h_reference]`` (:meth:`PreferenceModel.adjust_tensor_shapes`). On the last stage the
per-token log-probs of both models are minus Megatron's vocab-parallel cross-entropy of their
``[2m, s, vocab/tp]`` logits (exact under TP; :func:`token_cross_entropy`), summed (or averaged) over answer
tokens, and :func:`minitron.align.losses.pair_losses` gives the per-pair loss. The loss function returns
``(sum of pair losses, m)``: the engine divides by the global number of pairs, so the update is the same for
any micro-batching and DP.

The reference is a second model shard, not a weight swap: on CPU host and device memory are one, so
swapping weights to host saves nothing and costs two copies per step; on a GPU the second shard costs one
copy of the weights in the compute dtype (SmolLM2-135M: 0.27 GB in bf16, 0.54 GB in fp32) next to the
policy's weights + fp32 gradients + Adam moments (+ fp32 main weights in bf16): about 2.2 GB in fp32
(+25%), 2.4 GB in bf16 (+11%); for an 8B model in bf16 on one rank, +16 GB on ~128 GB. With policy ==
reference and the same micro-batch, step 0's log-ratios are exactly 0 (loss ln 2 for DPO).
"""

from __future__ import annotations

import torch

from minitron.align import losses
from minitron.config.align import AlignSettings
from minitron.config.distill import DistillSettings
from minitron.distill.model import DistillationModel
from minitron.training.step import StepFunctions

REPORTS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
           "logps/rejected", "preference", "sft")  # fmt: skip
_PER_PAIR = {"rewards/chosen": "chosen", "rewards/rejected": "rejected", "rewards/accuracies": "accuracy",
             "rewards/margins": "margin", "preference": "preference", "sft": "sft"}  # fmt: skip


class PreferenceModel(DistillationModel):
    """A trainable ``policy`` shard and a frozen ``reference`` shard (bare ``GPTModel``s, same layout)."""

    def __init__(self, policy, reference, settings: AlignSettings, seed: int):
        super().__init__(policy, reference, DistillSettings(), seed)
        self.align = settings

    @property
    def policy(self):
        return self.student

    def step_functions(self) -> StepFunctions:
        shapes = self.adjust_tensor_shapes if self.pipeline_parallel else None
        return StepFunctions(forward_step=self.forward_step, adjust_tensor_shapes=shapes, report_keys=REPORTS,
                             sequences_per_sample=2)  # fmt: skip

    def adjust_tensor_shapes(self, recv_shapes: list, send_shapes: list) -> tuple[list, list]:
        """P2P shapes ``[s, m, h]`` -> ``[s, 2m, h_policy + h_reference]`` (two sequences per pair)."""

        def widen(shapes):
            return [(shape[0], 2 * shape[1], self.student_hidden + self.teacher_hidden) for shape in shapes]

        return widen(recv_shapes), widen(send_shapes)

    def forward_step(self, data_iterator, model):
        """Megatron ``forward_step_func``: reference and policy on one micro-batch of pairs."""
        batch = next(data_iterator)
        flat = {key: value.flatten(0, 1) for key, value in batch.items() if key != "rewards"}  # [m, 2, s] -> [2m, s]
        flat["rewards"] = batch["rewards"]
        return super().forward_step(iter([flat]), model)

    def _loss(self, batch: dict, reference_logits: torch.Tensor, captured: dict, policy_logits: torch.Tensor):
        """Last stage: (sum of the pairs' losses, number of pairs, reports of [sum, pairs])."""
        settings = self.align
        labels, mask = batch["labels"], batch["loss_mask"].to(policy_logits.device)
        policy = losses.sequence_logps(-token_cross_entropy(policy_logits, labels), mask, settings.average_logps)
        with torch.no_grad():
            reference = losses.sequence_logps(-token_cross_entropy(reference_logits, labels), mask,
                                              settings.average_logps)  # fmt: skip
        rewards = batch["rewards"].to(policy.device, policy.dtype)
        out = losses.pair_losses(settings.loss, policy[0::2], policy[1::2], reference[0::2], reference[1::2],
                                 settings.beta, settings.eta, rewards[:, 0], rewards[:, 1],
                                 settings.sft_weight)  # fmt: skip
        pairs = torch.tensor(float(len(rewards)), device=policy.device)
        total = out["loss"].sum()
        reports = {"loss": torch.stack([total.detach(), pairs]),
                   "logps/chosen": torch.stack([policy[0::2].detach().sum(), pairs]),
                   "logps/rejected": torch.stack([policy[1::2].detach().sum(), pairs])}  # fmt: skip
        reports.update({name: torch.stack([out[key].sum(), pairs]) for name, key in _PER_PAIR.items()})
        return total, pairs.to(torch.int), reports


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token ``-log p(label)`` ``[2m, s]`` (fp32) of vocab-parallel ``logits`` ``[2m, s, vocab/tp]``.

    Megatron's vocab-parallel cross-entropy, the one the language-model loss of a plain training step uses: it
    works in place on the fp32 logits and keeps only their softmax for the backward pass, so the two log-prob
    passes of a DPO step cost what one LM loss costs (a log-softmax copy of the vocabulary would not).
    ``logits`` are consumed: in fp32 they are overwritten.
    """
    from megatron.core import tensor_parallel

    return tensor_parallel.vocab_parallel_cross_entropy(logits.float(), labels.to(logits.device, torch.int64))


def load_preference(policy_source, reference_source, tp: int, pp: int, dtype: torch.dtype,
                    settings: AlignSettings, seed: int) -> PreferenceModel:  # fmt: skip
    """Build and load both shards in this rank's layout and ``dtype``, wired for preference optimisation."""
    from minitron.models.checkpoint import load_model

    policy = load_model(policy_source, tp, pp, dtype)
    reference = load_model(reference_source, tp, pp, dtype)
    return PreferenceModel(policy, reference, settings, seed)
