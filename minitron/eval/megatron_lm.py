"""lm-eval's ``TemplateLM`` on a sharded Megatron-Core ``GPTModel``, at any TP x PP x DP.

Tokenisation, context/continuation splitting and the request order are lm-eval's (``TemplateLM``) and
mirror its ``hf`` backend (``HFLM``), so both see the same token ids:

* ``tok_encode`` adds the tokenizer's default special tokens, except to text that already starts with
  the BOS string; an empty context is ``[prefix_token_id]`` (BOS, else EOS).
* Scoring a request ``(ctx, cont)``: the input is ``(ctx + cont)[-(max_length + 1):][:-1]``, the model's
  log-softmax over the whole vocabulary (fp32) at the last ``len(cont)`` positions gives
  ``sum log p(cont)`` and ``is_greedy`` (every argmax equals the continuation).

Requests with the same input share one forward pass (lm-eval's ``hf`` does the same for one-token
continuations: MMLU's four answers cost one pass). Inputs are sorted longest first and right-padded
in batches of ``batch_size`` ``[b, s]``; a causal model's scores do not depend on the padding. The LM head
runs only at the continuation positions (:func:`minitron.models.megatron_gpt.logits_only_at`), and only
those logits ``[n, vocab / tp]`` are gathered over TP.

Processes: lm-eval splits documents over ``rank`` / ``world_size`` = the data-parallel rank and size;
the TP and PP ranks of one replica receive the same requests and run the model together. Scores
appear on the last pipeline stage and are broadcast to the other stages.

Inputs longer than the model's context (``max_length + 1`` tokens) are refused with a
:class:`MinitronError` before anything runs, unless ``allow_truncation`` (then they are left-truncated
as lm-eval's ``hf`` does, and counted in :attr:`MegatronLM.truncated`).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import handle_stop_sequences, has_bos_prefix, normalize_gen_kwargs, postprocess_generated_text

from minitron.errors import MinitronError


class MegatronLM(TemplateLM):
    """lm-eval model: ``model`` is this rank's ``GPTModel`` shard (eval mode), ``tokenizer`` a HF tokenizer."""

    def __init__(self, model, tokenizer, max_length: int, batch_size: int = 8, allow_truncation: bool = False,
                 max_gen_toks: int = 256, model_name: str = "minitron-megatron"):  # fmt: skip
        super().__init__()
        from megatron.core import parallel_state

        self.model = model
        self.tokenizer = tokenizer
        self._max_length = max_length
        self.batch_size = batch_size
        self.allow_truncation = allow_truncation
        self.max_gen_toks = max_gen_toks
        self.model_name = model_name
        self.truncated = {"loglikelihood": 0, "generate_until": 0}  # requests cut from the left, over all DP ranks
        self._device = next(model.parameters()).device
        self._dp_group = parallel_state.get_data_parallel_group()
        self._rank = parallel_state.get_data_parallel_rank()
        self._world_size = parallel_state.get_data_parallel_world_size()

    # ---- what lm-eval asks of a model -----------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: Optional[bool] = None, **kwargs) -> list[int]:
        special = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode(self.prefix_token_id)):
            special = {"add_special_tokens": False}
        return self.tokenizer.encode(string, **special)

    def apply_chat_template(self, chat_history: list[dict], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
        )  # fmt: skip

    def get_model_info(self) -> dict:
        return {"model": self.model_name, "model_dtype": str(next(self.model.parameters()).dtype)}

    # ---- data-parallel collectives (the evaluator's; over this replica's DP group) ----------------
    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return tensor
        tensor = tensor.reshape(-1)
        pieces = [torch.empty_like(tensor) for _ in range(self.world_size)]
        torch.distributed.all_gather(pieces, tensor, group=self._dp_group)
        return torch.cat(pieces)

    def gather_object(self, obj, dst: int = 0):
        if self.world_size == 1:
            return [obj]
        gathered = [None] * self.world_size if self.rank == dst else None
        torch.distributed.gather_object(obj, gathered, group=self._dp_group, group_dst=dst)
        return gathered

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier(group=self._dp_group)

    # ---- scoring ----------------------------------------------------------------------------------
    def _count_too_long(self, kind: str, lengths: list[int], limit: int) -> None:
        """Refuse (or count, with ``allow_truncation``) inputs longer than ``limit`` tokens, over all DP ranks."""
        counts = torch.tensor([sum(n > limit for n in lengths), len(lengths)], dtype=torch.int64, device=self._device)
        if self.world_size > 1:
            torch.distributed.all_reduce(counts, group=self._dp_group)
        too_long, total = int(counts[0]), int(counts[1])
        self.truncated[kind] += too_long
        if too_long and not self.allow_truncation:
            raise MinitronError(
                f"{too_long} of {total} {kind} requests are longer than the model's context of {self.max_length} "
                f"tokens (longest here: {max(lengths)}); use fewer shots (eval.num_fewshot), a model with a longer "
                "context, or eval.allow_truncation=true to cut them from the left as lm-eval's hf backend does "
                "(the count is recorded)"
            )

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        for _, _, continuation in requests:
            if not 0 < len(continuation) <= self.max_length:
                raise MinitronError(f"a continuation of {len(continuation)} tokens cannot be scored with a context of "
                                    f"{self.max_length} tokens")  # fmt: skip
        self._count_too_long("loglikelihood", [len(c) + len(x) for _, c, x in requests], self.max_length + 1)
        inputs: dict[tuple[int, ...], list[int]] = {}  # input tokens -> indices of the requests scored on it
        for index, (_, context, continuation) in enumerate(requests):
            inputs.setdefault(tuple((context + continuation)[-(self.max_length + 1) :][:-1]), []).append(index)
        order = sorted(inputs, key=lambda tokens: (-len(tokens), tokens))
        scores = torch.zeros(len(requests), 2, dtype=torch.float64, device=self._device)  # (logprob, is_greedy)
        from tqdm import tqdm

        bar = tqdm(total=len(requests), desc="loglikelihood", disable=disable_tqdm or torch.distributed.get_rank() != 0)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            self._score_batch(batch, [[(i, requests[i][2]) for i in inputs[tokens]] for tokens in batch], scores)
            bar.update(sum(len(inputs[tokens]) for tokens in batch))
        bar.close()
        self._share_from_last_stage(scores)
        return [(float(s[0]), bool(s[1])) for s in scores.cpu()]

    def _score_batch(self, batch: list[tuple[int, ...]], scored: list[list[tuple[int, list[int]]]],
                     scores: torch.Tensor) -> None:  # fmt: skip
        """One forward of the inputs ``batch`` ``[b, s]``; ``scored[row]`` = [(request index, continuation)]."""
        from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

        from minitron.eval.forward import forward_only
        from minitron.models.megatron_gpt import logits_only_at

        length = len(batch[0])
        tokens = torch.zeros(len(batch), length, dtype=torch.int64)
        for row, inp in enumerate(batch):
            tokens[row, : len(inp)] = torch.tensor(inp)
        # positions read per row: the last max(len(cont)) input positions
        spans = [(len(inp) - max(len(cont) for _, cont in scored[row]), len(inp)) for row, inp in enumerate(batch)]
        rows = torch.cat([torch.full((end - begin,), row) for row, (begin, end) in enumerate(spans)])
        positions = torch.cat([torch.arange(begin, end) for begin, end in spans])

        def on_output(micro_batch, logits):  # logits [1, n, vocab / tp] of the kept positions, on the last stage
            logprobs = F.log_softmax(gather_from_tensor_model_parallel_region(logits[0]).float(), dim=-1)
            offset = 0
            for row, (begin, end) in enumerate(spans):
                block = logprobs[offset : offset + end - begin]
                offset += end - begin
                for index, cont in scored[row]:
                    part = block[-len(cont) :]
                    target = torch.tensor(cont, device=part.device)
                    scores[index, 0] = part.gather(1, target[:, None]).sum().double()
                    scores[index, 1] = float(bool((part.argmax(dim=-1) == target).all()))

        with logits_only_at(self.model, rows, positions):
            forward_only(self.model, [{"tokens": tokens}], 1, length, len(batch), on_output, with_labels=False)

    def _share_from_last_stage(self, values: torch.Tensor) -> None:
        from megatron.core import parallel_state

        if parallel_state.get_pipeline_model_parallel_world_size() > 1:
            torch.distributed.broadcast(values, src=parallel_state.get_pipeline_model_parallel_last_rank(),
                                        group=parallel_state.get_pipeline_model_parallel_group())  # fmt: skip

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        raise NotImplementedError("minitron's lm-eval backend scores multiple-choice and generation tasks only")

    # ---- generation -------------------------------------------------------------------------------
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy or sampled continuations until a stop string, EOS or ``max_gen_toks`` (lm-eval's kwargs)."""
        from minitron.eval.generation import Sampling, generate

        eos = self.tokenizer.decode([self.eot_token_id]) if self.eot_token_id is not None else None
        plans = []
        for context, gen_kwargs in (request.args for request in requests):
            kwargs = normalize_gen_kwargs(dict(gen_kwargs), self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_new = kwargs.pop("max_gen_toks")
            if max_new >= self.max_length:
                raise MinitronError(
                    f"max_gen_toks={max_new} leaves no room for a prompt in a context of {self.max_length}"
                )
            sampling = Sampling(
                do_sample=bool(kwargs.get("do_sample")), temperature=float(kwargs.get("temperature", 0.0)),
                top_k=int(kwargs.get("top_k") or 0), top_p=float(kwargs.get("top_p") or 1.0),
            )  # fmt: skip
            plans.append((self.tok_encode(context), until, max_new, sampling))
        self._count_too_long("generate_until", [len(p[0]) + p[2] for p in plans], self.max_length)
        outputs: list[Optional[str]] = [None] * len(plans)
        # one generate() call per (max_new, sampling, until): prompts of equal length are batched inside
        groups: dict[tuple, list[int]] = {}
        for index, (_, until, max_new, sampling) in enumerate(plans):
            groups.setdefault((max_new, sampling, tuple(until)), []).append(index)
        for (max_new, sampling, until), indices in groups.items():
            prompts = [plans[i][0][-(self.max_length - max_new) :] for i in indices]
            generated = generate(self.model, prompts, max_new, sampling, self.tokenizer, stop=list(until),
                                 eos_token_ids=[self.eot_token_id], batch_size=self.batch_size)  # fmt: skip
            for i, tokens in zip(indices, generated):
                outputs[i] = postprocess_generated_text(self.tokenizer.decode(tokens, skip_special_tokens=True),
                                                        stop=list(until), think_end_token=None)  # fmt: skip
        return outputs
