"""Aggregating activations into per-unit importance: over the sequence, then over the batch.

An activation ``x`` of one hook is ``[seq, batch, units]`` (Megatron's layout). Its per-unit score is
two reductions of ``|x|``: over the sequence of each sample (``seq``: mean | l2 | max), giving
``[batch, units]``, then over all calibration samples (``batch``: l2 | mean | max). The paper's best
(and the default) is ``batch="l2", seq="mean"``: ``sqrt(sum_samples (mean_seq |x|)^2)``.

Samples arrive in micro-batches on many data-parallel ranks, so the batch reduction is split in
three steps: :meth:`Aggregation.accumulate` keeps a reducible statistic (sum of squares for l2, sum
for mean, running max for max), the caller all-reduces it with :attr:`Aggregation.reduce_op`, and
:meth:`Aggregation.finalize` turns it into scores (square root, division by the sample count).
"""

from __future__ import annotations

import dataclasses

import torch

from minitron.config.prune import BATCH_REDUCTIONS, SEQ_REDUCTIONS


@dataclasses.dataclass(frozen=True)
class Aggregation:
    batch: str = "l2"  # over calibration samples: l2 | mean | max
    seq: str = "mean"  # over the tokens of one sample, of |x|: mean | l2 | max

    def __post_init__(self):
        if self.batch not in BATCH_REDUCTIONS:
            raise ValueError(f"batch aggregation {self.batch!r}: use one of {', '.join(BATCH_REDUCTIONS)}")
        if self.seq not in SEQ_REDUCTIONS:
            raise ValueError(f"sequence aggregation {self.seq!r}: use one of {', '.join(SEQ_REDUCTIONS)}")

    @classmethod
    def parse(cls, value) -> "Aggregation":
        """From an :class:`Aggregation` or a ``(batch, seq)`` pair such as ``("l2", "mean")``."""
        if isinstance(value, Aggregation):
            return value
        batch, seq = value
        return cls(batch=batch, seq=seq)

    def to_dict(self) -> dict:
        return {"batch": self.batch, "seq": self.seq}

    def per_sample(self, activation: torch.Tensor) -> torch.Tensor:
        """``[seq, batch, units]`` -> ``[batch, units]`` (fp32): the sequence reduction of ``|x|``."""
        magnitude = activation.float().abs()
        if self.seq == "mean":
            return magnitude.mean(dim=0)
        if self.seq == "l2":
            return magnitude.pow(2).sum(dim=0).sqrt()
        return magnitude.amax(dim=0)

    def accumulate(self, statistic: torch.Tensor, per_sample: torch.Tensor) -> None:
        """Fold ``per_sample`` ``[batch, units]`` into ``statistic`` ``[units]`` in place."""
        values = per_sample.to(statistic.dtype)
        if self.batch == "l2":
            statistic += values.pow(2).sum(dim=0)
        elif self.batch == "mean":
            statistic += values.sum(dim=0)
        else:
            torch.maximum(statistic, values.amax(dim=0), out=statistic)

    @property
    def reduce_op(self):
        """How statistics of different ranks combine (zeros are neutral for both: scores are >= 0)."""
        return torch.distributed.ReduceOp.MAX if self.batch == "max" else torch.distributed.ReduceOp.SUM

    def finalize(self, statistic: torch.Tensor, num_samples: int) -> torch.Tensor:
        """Scores from the reduced statistic of ``num_samples`` samples."""
        if self.batch == "l2":
            return statistic.sqrt()
        if self.batch == "mean":
            return statistic / num_samples
        return statistic.clone()


def head_scores(channel_scores: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``[..., heads * head_dim]`` channel scores of the ``linear_proj`` input -> ``[..., heads]``: L2 over head_dim."""
    return channel_scores.reshape(*channel_scores.shape[:-1], num_heads, -1).norm(dim=-1)


def group_scores(heads: torch.Tensor, num_query_groups: int) -> torch.Tensor:
    """``[..., heads]`` -> ``[..., groups]``: L2 of each group's heads (head ``h`` is in group ``h // per_group``)."""
    return heads.reshape(*heads.shape[:-1], num_query_groups, -1).norm(dim=-1)
