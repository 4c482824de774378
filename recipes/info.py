"""minitron info: architecture, parameter counts and FLOPs per token of a model.

    minitron info model.path=DIR [info.seq_length=4096]

Reads only the config (no weights, no processes). The last stdout line is one JSON object with
``params``, ``embedding_params``, ``non_embedding_params``, ``flops_per_token`` and ``architecture``.
"""

from minitron import runtime
from minitron.config import schema
from minitron.models.arch import arch_summary
from minitron.models.checkpoint import open_model


@runtime.recipe("info")
def main(cfg) -> None:
    cfg = schema.to_object(cfg)
    source = open_model(cfg.model.path)
    summary = arch_summary(source.arch, cfg.info.seq_length)
    arch = source.arch
    runtime.log(
        f"{source.path} ({source.kind}, {arch.model_type}, stored as {str(source.dtype).replace('torch.', '')})\n"
        f"  layers {arch.num_layers}, hidden {arch.hidden_size}, ffn {arch.ffn_hidden_size}, "
        f"heads {arch.num_attention_heads} x {arch.head_dim} in {arch.num_query_groups} query groups, "
        f"vocab {arch.vocab_size}{', tied embeddings' if arch.tie_word_embeddings else ''}\n"
        f"  parameters {summary['params']:,} (embedding {summary['embedding_params']:,}, "
        f"non-embedding {summary['non_embedding_params']:,})\n"
        f"  forward FLOPs/token at seq {cfg.info.seq_length}: {summary['flops_per_token']['forward']:,}"
    )
    runtime.print_result({"path": str(source.path), "kind": source.kind, **summary})


if __name__ == "__main__":
    main()
