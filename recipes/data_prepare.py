"""minitron data prepare: tokenize text into a Megatron indexed dataset (PREFIX.bin, .idx and .json).

    minitron data prepare data.path=FILE_OR_DIR model.path=DIR output=PREFIX [data.workers=4]
                          [data.text_field=text] [overwrite=false]
    minitron data prepare data.format=sft|preference data.path=FILE.jsonl model.path=DIR output=PREFIX
                          [data.seq_length=2048 data.truncation=truncate|drop|off data.chat_template=FILE]

FILE_OR_DIR is a .txt (one document), .jsonl (one document per line, field ``data.text_field``) or
.parquet file (column ``data.text_field``), or a directory of them; DIR is the HF directory or
minitron checkpoint whose tokenizer to use. Every document ends with the tokenizer's EOS token. The
format is in :mod:`minitron.data.prepare`. The last stdout line is one JSON object with ``output``,
``num_documents``, ``num_tokens`` and ``tokens_per_s``. SFT and preference data (formats in
:mod:`minitron.align.chat`, files in :mod:`minitron.align.data`) are rendered with the chat template and
stored with answer-only loss masks; for them the JSON has ``num_examples``, ``truncated`` and ``dropped``.
"""

from minitron import runtime
from minitron.align.data import prepare_chat_dataset
from minitron.config import schema
from minitron.data.prepare import prepare_dataset


@runtime.recipe("data_prepare")
def main(cfg) -> None:
    cfg = schema.to_object(cfg)
    if cfg.data.format != "text":  # chat / preference JSONL: rendered with the chat template, answer-only masks
        result = prepare_chat_dataset(cfg.data.format, cfg.data.path, cfg.model.path, cfg.output, cfg.data.seq_length,
                                      cfg.data.truncation, cfg.data.chat_template, cfg.overwrite)  # fmt: skip
        runtime.log(f"{result['num_examples']:,} {cfg.data.format} examples of {result['rows']:,} rows "
                    f"({result['truncated']} truncated, {result['dropped']} dropped), {result['answer_tokens']:,} "
                    f"answer tokens of {result['num_tokens']:,}")  # fmt: skip
        runtime.print_result(result)
        return
    result = prepare_dataset(
        cfg.data.path, cfg.model.path, cfg.output, text_field=cfg.data.text_field, workers=cfg.data.workers,
        overwrite=cfg.overwrite, progress=runtime.is_main_process(),
    )  # fmt: skip
    if result.get("skipped"):
        runtime.log(f"{result['output']} is up to date (same files, same tokenizer): nothing to do")
        runtime.print_result(result)
        return
    runtime.log(f"{result['num_documents']:,} documents, {result['num_tokens']:,} tokens in {result['seconds']:.1f} s "
                f"({result['tokens_per_s']:,} tokens/s, {result['workers']} workers)")  # fmt: skip
    runtime.print_result(result)


if __name__ == "__main__":
    main()
