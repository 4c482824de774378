"""minitron generate: continue a prompt on the Megatron engine with a KV cache, at any TP/PP.

    minitron generate model.path=DIR prompt="What is the capital of France?"
    minitron generate model.path=DIR prompt="Once upon a time" generate.chat=false generate.max_new_tokens=100
    minitron generate model.path=DIR prompt="Tell me a joke" generate.do_sample=true generate.temperature=0.7 generate.top_p=0.9
    torchrun --nproc-per-node 2 $(which minitron) generate model.path=DIR prompt="Hi" parallel.tp=2
    minitron generate model.path=DIR 'prompts=["What is 2+2?","Name a colour."]' output=answers.json   # several

DIR is an HF directory or a minitron Megatron checkpoint. The prompt is wrapped in the tokenizer's chat
template when it has one (generate.chat=false: plain text). Generation stops at an EOS token (the
tokenizer's and generation_config.json's) or after generate.max_new_tokens. Greedy by default: token for
token what transformers' generate gives. The text is printed; the last stdout line is one JSON object
with the text, its token ids and the prefill/decode speeds.
"""

from minitron import runtime
from minitron.config import schema
from minitron.errors import MinitronError
from minitron.fsutil import check_not_an_input
from minitron.eval.generation import Sampling, Timing, eos_token_ids, generate
from minitron.eval.harness import check_tokenizer
from minitron.models import checkpoint
from minitron.models.megatron_gpt import check_parallel_layout
from minitron.models.tokenizer import load_tokenizer
from minitron.parallel import setup_distributed, teardown_distributed


@runtime.recipe("generate")
def main(cfg) -> None:
    cfg = schema.to_object(cfg)
    settings = cfg.generate
    source = checkpoint.open_model(cfg.model.path)
    check_parallel_layout(source.arch, cfg.parallel.tp, cfg.parallel.pp)
    tokenizer = load_tokenizer(source.carried_files)
    check_tokenizer(source, tokenizer)
    chat = bool(tokenizer.chat_template) if settings.chat is None else settings.chat
    if chat and not tokenizer.chat_template:
        raise MinitronError(
            f"generate.chat=true but the tokenizer of {source.path} has no chat template; use generate.chat=false"
        )
    prompts = [_encode(tokenizer, text, chat) for text in cfg.all_prompts]
    longest = max(prompts, key=len)
    if len(longest) + settings.max_new_tokens > source.arch.max_position_embeddings:
        raise MinitronError(f"the prompt ({len(longest)} tokens) plus generate.max_new_tokens={settings.max_new_tokens} exceeds the "
                            f"model's context of {source.arch.max_position_embeddings} tokens; shorten one of them")  # fmt: skip
    if cfg.output:
        check_not_an_input(cfg.output, [("model.path", cfg.model.path)])
    ctx = setup_distributed(cfg.parallel.tp, cfg.parallel.pp)
    try:
        dtype = source.build_dtype(cfg.model.dtype, for_compute=True)
        model = checkpoint.load_model(source, ctx.tp, ctx.pp, dtype).eval()
        sampling = Sampling(settings.do_sample, settings.temperature, settings.top_k, settings.top_p, settings.seed)
        answers = []
        for text, prompt in zip(cfg.all_prompts, prompts):
            timing = Timing()
            (tokens,) = generate(model, [prompt], settings.max_new_tokens, sampling, tokenizer,
                                 eos_token_ids=eos_token_ids(tokenizer, source.carried_files), timing=timing)  # fmt: skip
            output = tokenizer.decode(tokens, skip_special_tokens=True)
            if runtime.is_main_process():
                print(output, flush=True)
            answers.append({"prompt": text, "text": output, "token_ids": tokens, "prompt_tokens": len(prompt),
                            **timing.speeds()})  # fmt: skip
        result = {**answers[0], "chat": chat, "sampling": "greedy" if sampling.greedy else "sample",
                  "model": str(source.path)}  # fmt: skip
        if len(answers) > 1:
            result["answers"] = answers
        runtime.report_result(result, cfg.output)
    finally:
        teardown_distributed()


def _encode(tokenizer, text: str, chat: bool) -> list[int]:
    """Token ids of ``text``, wrapped in the chat template as one user turn when ``chat``."""
    if chat:
        text = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)  # fmt: skip
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(text)["input_ids"]

if __name__ == "__main__":
    main()
