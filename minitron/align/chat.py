"""Render chat and preference records with a chat template into token ids and answer-only loss masks.

Records (one JSON object per line):

- SFT: ``{"messages": [{"role", "content"}, ...]}`` (every assistant turn is trained on) or
  ``{"prompt": str, "completion": str}`` (one user turn, one assistant turn).
- Preference: ``{"prompt": str, "chosen": str, "rejected": str}`` with optional numeric
  ``chosen_reward`` and ``rejected_reward`` (RPO; defaults 1.0 and 0.0, as NeMo-Aligner's).

An assistant turn's answer tokens are found as in TRL/torchtune: the conversation up to the turn is rendered
with ``add_generation_prompt=True`` (the prompt) and with the turn (prompt + answer); both are tokenised
(no extra special tokens: the template writes them) and the prompt's ids must be a prefix of the whole
conversation's. The answer is everything between the two, so the template's end-of-turn token (and what
the template writes after it, e.g. a newline) is trained on. Mask value 1 marks an answer token.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Optional

from minitron.errors import MinitronError

DEFAULT_REWARDS = (1.0, 0.0)  # chosen, rejected when a preference record gives none (NeMo-Aligner's defaults)


def chat_template(tokenizer, template: Optional[str], model_path) -> str:
    """The template to render with: ``data.chat_template`` (a file, or the Jinja text itself), else the tokenizer's."""
    if template:
        path = Path(str(template)).expanduser()
        if "{" not in str(template) and path.is_file():
            return path.read_text()
        if "{" not in str(template):
            raise MinitronError(f"data.chat_template={template}: no such file (give a Jinja file or the template text)")
        return str(template)
    if not getattr(tokenizer, "chat_template", None):
        raise MinitronError(
            f"model.path={model_path}: its tokenizer has no chat template; pass data.chat_template=FILE (a Jinja "
            "chat template) to render chat and preference data"
        )
    return tokenizer.chat_template


def _render_ids(tokenizer, template: str, messages: list, add_generation_prompt: bool) -> list[int]:
    text = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)  # fmt: skip
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _check_messages(messages, where: str) -> list:
    if not isinstance(messages, list) or not messages:
        raise MinitronError(f"{where}: 'messages' must be a non-empty list of {{\"role\", \"content\"}} objects")
    for turn in messages:
        if not isinstance(turn, dict) or not isinstance(turn.get("role"), str) or not isinstance(turn.get("content"), str):
            raise MinitronError(f"{where}: every message needs a string 'role' and a string 'content'")
        if turn["role"] == "assistant" and not turn["content"].strip():
            raise MinitronError(f"{where}: an assistant message is empty; give every answer some text or drop the row")
    if not any(turn["role"] == "assistant" for turn in messages):
        raise MinitronError(f"{where}: no assistant message: nothing to train on")
    return messages


def _string(record: dict, key: str, where: str, answer: bool = False) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise MinitronError(f"{where}: no string field {key!r} (a row needs {key!r})")
    if answer and not value.strip():
        raise MinitronError(f"{where}: field {key!r} is an empty answer; give it some text or drop the row")
    return value


def sft_messages(record, where: str) -> list:
    """The conversation of an SFT record (``messages``, or ``prompt`` + ``completion``)."""
    if not isinstance(record, dict):
        raise MinitronError(f"{where}: not a JSON object")
    if "messages" in record:
        return _check_messages(record["messages"], where)
    if "prompt" in record or "completion" in record:
        prompt, completion = _string(record, "prompt", where), _string(record, "completion", where, answer=True)
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    raise MinitronError(f"{where}: an SFT row needs 'messages' or 'prompt' and 'completion'")


def render_conversation(tokenizer, template: str, messages: list, where: str) -> tuple[list[int], list[int]]:
    """Token ids of the whole conversation and its loss mask (1 on every assistant turn's tokens)."""
    ids = _render_ids(tokenizer, template, messages, add_generation_prompt=False)
    mask = [0] * len(ids)
    for index, turn in enumerate(messages):
        if turn["role"] != "assistant":
            continue
        start = _render_ids(tokenizer, template, messages[:index], add_generation_prompt=True)
        end = _render_ids(tokenizer, template, messages[: index + 1], add_generation_prompt=False)
        if ids[: len(start)] != start or ids[: len(end)] != end:
            raise MinitronError(
                f"{where}: the chat template does not render turn {index} as a prefix of the conversation, so its "
                "answer tokens cannot be found; use a template that renders turns incrementally (data.chat_template=)"
            )
        if len(end) <= len(start):
            raise MinitronError(f"{where}: assistant turn {index} renders to no tokens")
        mask[len(start) : len(end)] = [1] * (len(end) - len(start))
    return ids, mask


def render_pair(tokenizer, template: str, record, where: str) -> tuple[list, list, list, list, tuple[float, float]]:
    """(chosen ids, chosen mask, rejected ids, rejected mask, (chosen reward, rejected reward)) of a preference row."""
    if not isinstance(record, dict):
        raise MinitronError(f"{where}: not a JSON object")
    prompt = record.get("prompt")
    if isinstance(prompt, list):
        prompt_turns = _check_messages(prompt + [{"role": "assistant", "content": "x"}], where)[:-1]
    elif isinstance(prompt, str):
        prompt_turns = [{"role": "user", "content": prompt}]
    else:
        raise MinitronError(f"{where}: no field 'prompt' (a string, or a list of messages)")
    answers = [_string(record, key, where, answer=True) for key in ("chosen", "rejected")]
    rewards = []
    for key, default in zip(("chosen_reward", "rejected_reward"), DEFAULT_REWARDS):
        value = record.get(key, default)
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise MinitronError(f"{where}: {key} must be a number (got {value!r})")
        rewards.append(float(value))
    rendered = []
    for answer in answers:
        rendered += render_conversation(tokenizer, template, prompt_turns + [{"role": "assistant", "content": answer}],
                                        where)  # fmt: skip
    return (*rendered, tuple(rewards))
