"""Training data: text/jsonl/parquet to Megatron indexed datasets, and GPT datasets and batches over them.

- :mod:`minitron.data.prepare`: tokenize documents into ``PREFIX.bin`` / ``PREFIX.idx`` / ``PREFIX.json``.
- :mod:`minitron.data.gpt_datasets`: train/valid/test ``GPTDataset`` blends of prefixes, and the
  resumable :class:`~minitron.data.gpt_datasets.MicroBatchIterator` of one data-parallel rank.
"""
