"""Turn a Llama-family GGUF file into a plain Hugging Face model directory.

transformers can *load* a GGUF checkpoint (it de-quantizes every tensor to the requested dtype),
but ``save_pretrained`` refuses a model that came from GGUF because its config carries a
``quantization_config``.  The conversion here therefore copies the de-quantized state dict into a
fresh ``LlamaForCausalLM`` built from the same config without ``quantization_config``, and saves
that one (fp32 safetensors) together with the tokenizer read from the same GGUF file.

The output directory is written next to its final place and renamed into it once complete, so an
interrupted conversion never leaves a half-written model directory behind.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable

from minitron.errors import MinitronError
from minitron.fsutil import open_permissions, replace_directory

#: Text used to check that the saved model reproduces the GGUF model's logits.
CHECK_TEXT = "The State of the Union is strong. Linux documentation explains kernel modules."

Log = Callable[[str], None]


def _print(msg: str) -> None:
    print(msg, flush=True)


def load_gguf_model(gguf_file: Path):
    """Load a GGUF checkpoint with transformers, de-quantized to fp32, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    gguf_file = Path(gguf_file)
    if not gguf_file.is_file():
        raise MinitronError(f"GGUF file {gguf_file} does not exist; run `minitron assets fetch`")
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32
    )
    return model.eval()


def load_gguf_tokenizer(gguf_file: Path):
    """Load the tokenizer stored in a GGUF file."""
    from transformers import AutoTokenizer

    gguf_file = Path(gguf_file)
    return AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)


def plain_config(gguf_config):
    """The model config of a GGUF-loaded model, without ``quantization_config``."""
    from transformers import AutoConfig

    data = gguf_config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path", "transformers_version"):
        data.pop(key, None)
    model_type = data.pop("model_type")
    config = AutoConfig.for_model(model_type, **data)
    if getattr(config, "quantization_config", None) is not None:  # pragma: no cover - defensive
        delattr(config, "quantization_config")
    return config


def plain_model_from_gguf_model(gguf_model):
    """A fresh, saveable causal-LM holding exactly the weights of ``gguf_model``."""
    import torch
    from transformers import AutoModelForCausalLM

    config = plain_config(gguf_model.config)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    # With tied embeddings ``lm_head.weight`` may be reported on either side; everything else
    # must match one to one.
    missing = [k for k in missing if k != "lm_head.weight"]
    unexpected = [k for k in unexpected if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(
            f"state dict of the GGUF model does not fit {type(model).__name__}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    if config.tie_word_embeddings:
        model.tie_weights()
    model.generation_config = gguf_model.generation_config
    return model.eval()


def count_parameters(model) -> int:
    """Number of distinct parameters (tied tensors counted once)."""
    return sum(p.numel() for p in model.parameters())


def logits_for(model, input_ids):
    import torch

    with torch.no_grad():
        return model(input_ids=input_ids).logits


def gguf_to_hf(
    gguf_file: Path, out_dir: Path, *, verify: bool = True, log: Log | None = _print
) -> Path:
    """Convert ``gguf_file`` into a Hugging Face model directory at ``out_dir`` (fp32 safetensors).

    Writes ``config.json``, ``generation_config.json``, ``model.safetensors`` and the tokenizer
    files.  With ``verify`` the saved directory is loaded back and its logits must equal the
    GGUF-loaded model's exactly on a short text.  Returns ``out_dir``.  An existing ``out_dir`` is
    replaced only after the new one is complete.
    """
    import torch
    from transformers import AutoModelForCausalLM

    say = log or (lambda _msg: None)
    gguf_file = Path(gguf_file)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    say(f"gguf: loading {gguf_file} (de-quantizing to fp32)")
    gguf_model = load_gguf_model(gguf_file)
    tokenizer = load_gguf_tokenizer(gguf_file)
    say(f"gguf: building a plain {gguf_model.config.model_type} model without quantization_config")
    model = plain_model_from_gguf_model(gguf_model)
    n_params = count_parameters(model)
    say(f"gguf: {n_params:,} parameters, {model.config.num_hidden_layers} layers, "
        f"hidden {model.config.hidden_size}")

    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        say(f"gguf: saving safetensors (fp32) and tokenizer to {out_dir}")
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        open_permissions(tmp)
        if verify:
            ids = tokenizer(CHECK_TEXT, return_tensors="pt").input_ids
            expected = logits_for(gguf_model, ids)
            reloaded = AutoModelForCausalLM.from_pretrained(str(tmp), dtype=torch.float32).eval()
            got = logits_for(reloaded, ids)
            if not torch.equal(expected, got):
                diff = (expected - got).abs().max().item()
                raise RuntimeError(
                    f"converted model's logits differ from the GGUF model's (max abs diff {diff})"
                )
            say(f"gguf: verified, logits identical on {ids.shape[1]} tokens")
        replace_directory(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


__all__ = [
    "gguf_to_hf",
    "load_gguf_model",
    "load_gguf_tokenizer",
    "plain_config",
    "plain_model_from_gguf_model",
    "count_parameters",
]
