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


def vocabulary(files_dir: Path) -> Optional[dict]:
    """Token -> id of the tokenizer in ``files_dir``; None when it has no tokenizer files (then only the
    vocabulary size of two models can be compared)."""
    try:
        return load_tokenizer(files_dir).get_vocab()
    except MinitronError:
        return None
