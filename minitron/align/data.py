"""Chat (SFT) and preference datasets: written by ``minitron data prepare data.format=sft|preference``, read
by ``minitron sft`` and ``minitron dpo``.

On disk (``PREFIX`` = ``output``), Megatron indexed datasets, one document per example:

- ``PREFIX.bin/.idx``: token ids; an SFT document is one sequence, a preference document two
  (chosen, then rejected);
- ``PREFIX.mask.bin/.idx`` (uint8): 1 on answer tokens, same layout;
- ``PREFIX.reward.bin/.idx`` (float32, preference only): ``[chosen_reward, rejected_reward]`` per pair;
- ``PREFIX.json``: ``format`` (:data:`FORMAT`, so ``minitron train`` refuses it as a corpus), ``kind``, counts,
  ``seq_length`` (the longest stored sequence is at most this), the tokenizer's identity, the template's sha256.

Length rule (``data.truncation``): ``truncate`` keeps the first ``data.seq_length`` tokens of a longer
sequence (a sequence left without answer tokens drops its example); ``drop`` drops every example with a
longer sequence; ``off`` refuses the input. Truncated and dropped examples are counted in the sidecar.

A training sample is a dict of ``[seq]`` tensors (``[2, seq]`` for a pair: chosen, rejected) ``tokens``,
``labels`` (next token), ``loss_mask`` (1.0 where the label is an answer token), ``position_ids`` and, for
pairs, ``rewards`` ``[2]``. Padding uses the EOS id and is masked. With ``pack`` (SFT), consecutive
examples share a sequence and the sample carries ``attention_mask`` ``[1, seq, seq]`` (bool, True = masked):
block-diagonal causal, so no token attends to another example. RoPE depends only on the offset between
query and key, so within a block the rotary positions' absolute offset changes nothing: a packed example's
loss equals its unpacked loss (Megatron's local spec takes RoPE positions from the sequence length;
``position_ids`` restart per example for specs that read them).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from minitron.align import chat
from minitron.errors import MinitronError
from minitron.fsutil import check_not_an_input, output_lock, sha256_file, write_json_atomic

FORMAT = "minitron-chat-dataset"
KINDS = ("sft", "preference")
AUX = {"mask": np.uint8, "reward": np.float32}  # PREFIX.<name>.bin/.idx beside the tokens


def _records(data_path):
    """(file, line number, JSON object) of every non-blank line of the .jsonl files of ``data_path``."""
    from minitron.data.documents import input_files

    for path in input_files(data_path):
        if path.suffix != ".jsonl":
            raise MinitronError(f"data.path={path}: chat and preference data must be .jsonl (one JSON object a line)")
        with open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    try:
                        yield path, number, json.loads(line)
                    except ValueError:
                        raise MinitronError(f"data.path={path}: line {number} is not valid JSON") from None


def _fit(ids: list, mask: list, seq_length: int, truncation: str, where: str) -> Optional[tuple[list, list]]:
    """The sequence within ``seq_length`` tokens by the length rule; None when the example is dropped."""
    if len(ids) <= seq_length:
        return ids, mask
    if truncation == "off":
        raise MinitronError(
            f"{where}: {len(ids)} tokens, longer than data.seq_length={seq_length} and data.truncation=off; raise "
            "data.seq_length or set data.truncation=truncate|drop"
        )
    if truncation == "drop" or not any(mask[:seq_length]):
        return None
    return ids[:seq_length], mask[:seq_length]


def render_examples(kind: str, data_path, tokenizer, template: str, seq_length: int, truncation: str):
    """Examples of ``data_path`` as lists of (ids, mask) sequences (+ rewards for pairs), and the counts."""
    examples, counts = [], {"rows": 0, "truncated": 0, "dropped": 0}
    for path, number, record in _records(data_path):
        where = f"data.path={path}: line {number}"
        counts["rows"] += 1
        if kind == "sft":
            sequences, rewards = [chat.render_conversation(tokenizer, template, chat.sft_messages(record, where), where)], None
        else:
            c_ids, c_mask, r_ids, r_mask, rewards = chat.render_pair(tokenizer, template, record, where)
            sequences = [(c_ids, c_mask), (r_ids, r_mask)]
        fitted = [_fit(ids, mask, seq_length, truncation, where) for ids, mask in sequences]
        if any(f is None for f in fitted):
            counts["dropped"] += 1
            continue
        counts["truncated"] += any(len(f[0]) < len(s[0]) for f, s in zip(fitted, sequences))
        examples.append((fitted, rewards))
    if not counts["rows"]:
        raise MinitronError(f"data.path={data_path}: holds no rows; nothing to write")
    if not examples:
        raise MinitronError(f"data.path={data_path}: every row was dropped by data.truncation={truncation} at "
                            f"data.seq_length={seq_length}; raise data.seq_length")  # fmt: skip
    return examples, counts


def prepare_chat_dataset(kind: str, data_path, model_path, output, seq_length: int, truncation: str = "truncate",
                         template: Optional[str] = None, overwrite: bool = False) -> dict:  # fmt: skip
    """Render, tokenise and write ``data_path`` (.jsonl) as a ``kind`` dataset at ``output``; returns a summary."""
    from megatron.core.datasets.indexed_dataset import DType, IndexedDatasetBuilder

    from minitron.data.documents import input_files
    from minitron.data.prepare import output_prefix, tokenizer_dir, tokenizer_identity
    from minitron.models.tokenizer import load_tokenizer
    from minitron.runtime import versions

    start = time.perf_counter()
    files = input_files(data_path)
    files_dir = tokenizer_dir(model_path)
    tokenizer = load_tokenizer(files_dir)
    if tokenizer.eos_token_id is None:
        raise MinitronError(f"model.path={model_path}: its tokenizer has no eos_token (needed for padding)")
    template_text = chat.chat_template(tokenizer, template, model_path)
    examples, counts = render_examples(kind, data_path, tokenizer, template_text, seq_length, truncation)
    prefix = output_prefix(output, overwrite)
    names = {"": ".bin", **{f".{name}": ".bin" for name in AUX}}
    check_not_an_input([Path(f"{prefix}{n}{s}") for n, s in names.items()],
                       [("model.path", model_path), *(("data.path", f) for f in files)])  # fmt: skip
    dtype = DType.optimal_dtype(len(tokenizer))
    with output_lock(prefix):
        staged = {}
        try:
            builders = {}
            for name, item_dtype in (("", dtype), *((f".{k}", v) for k, v in AUX.items() if k != "reward" or kind == "preference")):
                staged[name] = Path(f"{prefix}{name}.bin.{os.getpid()}.partial")
                builders[name] = IndexedDatasetBuilder(str(staged[name]), dtype=item_dtype)
            for sequences, rewards in examples:
                lengths = [len(ids) for ids, _ in sequences]
                builders[""].add_document(torch.tensor([t for ids, _ in sequences for t in ids]), lengths)
                builders[".mask"].add_document(torch.tensor([m for _, mask in sequences for m in mask]), lengths)
                if ".reward" in builders:
                    builders[".reward"].add_document(torch.tensor(rewards, dtype=torch.float32), [2])
            for name, builder in builders.items():
                builder.finalize(f"{staged[name]}.idx")
            meta = {
                "format": FORMAT, "version": 1, "kind": kind, "num_examples": len(examples), **counts,
                "answer_tokens": sum(sum(m) for seqs, _ in examples for _, m in seqs),
                "num_tokens": sum(len(ids) for seqs, _ in examples for ids, _ in seqs),
                "seq_length": seq_length, "truncation": truncation, "vocab_size": len(tokenizer),
                "pad_id": tokenizer.eos_token_id, "dtype": np.dtype(dtype).name,
                "tokenizer": tokenizer_identity(files_dir, tokenizer),
                "chat_template_sha256": hashlib.sha256(template_text.encode()).hexdigest(),
                "sources": [{"path": str(f.resolve()), "sha256": sha256_file(f)} for f in files],
                "versions": versions(),
            }  # fmt: skip
            for name in builders:
                os.replace(f"{staged[name]}.idx", f"{prefix}{name}.idx")
                if name:
                    os.replace(staged[name], f"{prefix}{name}.bin")
            write_json_atomic(f"{prefix}.json", meta)
            os.replace(staged[""], f"{prefix}.bin")  # last: its presence marks a finished dataset
        except BaseException:
            for path in staged.values():
                Path(path).unlink(missing_ok=True)
                Path(f"{path}.idx").unlink(missing_ok=True)
            raise
    keys = ("kind", "num_examples", "rows", "truncated", "dropped", "answer_tokens", "num_tokens", "seq_length")
    return {"output": str(prefix), **{k: meta[k] for k in keys}, "seconds": round(time.perf_counter() - start, 3)}


# ---- reading -------------------------------------------------------------------------------------


def read_chat_sidecar(prefix, kind: str, field: str = "data.path") -> dict:
    """The sidecar of a ``kind`` dataset at ``prefix``, with a clear error for anything else."""
    path = Path(f"{prefix}.json")
    if not path.is_file() or not Path(f"{prefix}.bin").is_file():
        raise MinitronError(f"{field}={prefix}: no dataset there (PREFIX.bin/.json); make it with `minitron data "
                            f"prepare data.format={kind} ...`")  # fmt: skip
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT or meta.get("kind") != kind:
        raise MinitronError(f"{field}={prefix}: not a {kind} dataset (format {meta.get('format')}, kind "
                            f"{meta.get('kind')}); prepare one with `minitron data prepare data.format={kind}`")  # fmt: skip
    return meta


class ChatExamples:
    """The stored examples of a prefix: ``sequences(i)`` -> list of (ids, mask) int64 arrays, ``rewards(i)``."""

    def __init__(self, prefix: str):
        from megatron.core.datasets.indexed_dataset import IndexedDataset

        self.meta = json.loads(Path(f"{prefix}.json").read_text())
        self.tokens = IndexedDataset(str(prefix), multimodal=False, mmap=True)
        self.masks = IndexedDataset(f"{prefix}.mask", multimodal=False, mmap=True)
        self.reward = IndexedDataset(f"{prefix}.reward", multimodal=False, mmap=True) if self.meta["kind"] == "preference" else None
        self.per_example = 2 if self.reward is not None else 1

    def __len__(self) -> int:
        return len(self.tokens) // self.per_example

    def sequences(self, index: int) -> list[tuple[np.ndarray, np.ndarray]]:
        first = index * self.per_example
        return [(self.tokens[i].astype(np.int64), self.masks[i].astype(np.int64)) for i in range(first, first + self.per_example)]

    def rewards(self, index: int) -> np.ndarray:
        return self.reward[index].astype(np.float32)


def pack_sample(sequences: list, seq_length: int, pad_id: int, block_mask: bool) -> dict:
    """One ``[seq]`` sample from consecutive (ids, mask) examples (padded); ``attention_mask`` when ``block_mask``."""
    tokens = torch.full((seq_length,), pad_id, dtype=torch.int64)
    labels = torch.full((seq_length,), pad_id, dtype=torch.int64)
    loss_mask = torch.zeros(seq_length, dtype=torch.float32)
    position_ids = torch.arange(seq_length, dtype=torch.int64)
    segment = torch.full((seq_length,), -1, dtype=torch.int64)
    offset = 0
    for number, (ids, mask) in enumerate(sequences):
        length = len(ids)
        ids_t, mask_t = torch.as_tensor(ids), torch.as_tensor(mask)
        tokens[offset : offset + length] = ids_t
        labels[offset : offset + length - 1] = ids_t[1:]
        loss_mask[offset : offset + length - 1] = mask_t[1:].float()  # label j is token j+1
        position_ids[offset : offset + length] = torch.arange(length)
        segment[offset : offset + length] = number
        offset += length
    sample = {"tokens": tokens, "labels": labels, "loss_mask": loss_mask, "position_ids": position_ids}
    if block_mask:
        causal = torch.ones(seq_length, seq_length, dtype=torch.bool).tril()
        same = segment.unsqueeze(0) == segment.unsqueeze(1)
        sample["attention_mask"] = ~(causal & same).unsqueeze(0)  # [1, s, s], True = masked
    return sample


class SFTDataset:
    """SFT samples of ``[seq_length]``: one example each (padded), or packed greedily in order (``pack``)."""

    def __init__(self, prefix: str, seq_length: int, pack: bool = False):
        self.examples = ChatExamples(prefix)
        self.seq_length, self.pack = seq_length, pack
        self.pad_id = self.examples.meta["pad_id"]
        lengths = [len(self.examples.tokens[i]) for i in range(len(self.examples))]
        if max(lengths) > seq_length:
            raise MinitronError(f"data.path={prefix}: holds sequences of {max(lengths)} tokens, longer than "
                                f"train.seq_length={seq_length}; prepare it with data.seq_length={seq_length}")  # fmt: skip
        self.bins = [[i] for i in range(len(lengths))]
        if pack:
            self.bins, used = [], seq_length
            for index, length in enumerate(lengths):
                if used + length > seq_length:
                    self.bins.append([])
                    used = 0
                self.bins[-1].append(index)
                used += length

    def __len__(self) -> int:
        return len(self.bins)

    def __getitem__(self, index: int) -> dict:
        sequences = [self.examples.sequences(i)[0] for i in self.bins[index]]
        return pack_sample(sequences, self.seq_length, self.pad_id, self.pack)


class PreferenceDataset:
    """Pairs as ``[2, seq_length]`` samples (chosen, rejected), padded, with ``rewards`` ``[2]``."""

    def __init__(self, prefix: str, seq_length: int):
        self.examples = ChatExamples(prefix)
        self.seq_length, self.pad_id = seq_length, self.examples.meta["pad_id"]
        longest = max(len(self.examples.tokens[i]) for i in range(len(self.examples.tokens)))
        if longest > seq_length:
            raise MinitronError(f"data.path={prefix}: holds sequences of {longest} tokens, longer than "
                                f"train.seq_length={seq_length}; prepare it with data.seq_length={seq_length}")  # fmt: skip

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        sides = [pack_sample([seq], self.seq_length, self.pad_id, False) for seq in self.examples.sequences(index)]
        sample = {key: torch.stack([side[key] for side in sides]) for key in sides[0]}
        sample["rewards"] = torch.as_tensor(self.examples.rewards(index))
        return sample
