"""The Hugging Face tokenizer of a model (an HF directory, or the files carried in a checkpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from minitron.errors import MinitronError


def load_tokenizer(files_dir: Path):
    """``AutoTokenizer`` from ``files_dir``; a clear error when the model has no tokenizer files."""
    from transformers import AutoTokenizer

    files_dir = Path(files_dir)
    if not any((files_dir / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "vocab.json")):
        raise MinitronError(f"{files_dir}: no tokenizer files (tokenizer.json, tokenizer.model or vocab.json)")
    return AutoTokenizer.from_pretrained(str(files_dir))


SPECIAL_TOKENS = ("bos", "eos", "pad", "unk")  # the special tokens whose ids a tokenized dataset depends on


def vocabulary_identity(tokenizer) -> dict:
    """What data tokenized by ``tokenizer`` depends on: ``vocab_size`` (added tokens included), ``vocab_sha256``
    (sha256 of every (id, token) pair, in id order) and ``special_tokens`` (name -> id of bos, eos, pad, unk).
    Two tokenizers with equal identities give every text the same ids."""
    import hashlib
    import json

    pairs = sorted((index, token) for token, index in tokenizer.get_vocab().items())
    digest = hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode()).hexdigest()
    special = {name: getattr(tokenizer, f"{name}_token_id", None) for name in SPECIAL_TOKENS}
    return {"vocab_size": len(tokenizer), "vocab_sha256": digest, "special_tokens": special}


def vocabulary(files_dir: Path) -> Optional[dict]:
    """Token -> id of the tokenizer in ``files_dir``; None when it has no tokenizer files (then only the
    vocabulary size of two models can be compared)."""
    try:
        return load_tokenizer(files_dir).get_vocab()
    except MinitronError:
        return None
