"""Bad input to every command, from one table: each case ends in exactly one `error:` line that names the setting
or file and the fix, exit status 2, nothing on stdout, and a file system exactly as it was (every path, size,
modification time and byte of the inputs and of the output's directory).

The cases run in this process through ``minitron.cli.main`` (a bad input is refused within a second or two). The
inputs are a "zoo" of good and bad models, texts and datasets made once per module: ``{model}`` (a tiny Llama with
the 256-character tokenizer), ``{zoo}/NAME`` (the bad ones, see :func:`zoo`), ``{text}``, ``{data}`` (a dataset of
``{model}``'s tokenizer); ``{out}`` is a path under the test's own directory that does not exist yet. A case with a
``lock`` holds that output's lock as another process (pid 4242) would.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import hold_lock, run_minitron, tree_snapshot

WORDS = "how vexingly quick daft zebras jump while the five boxing wizards jump quickly"

SMALL_TRAIN = "train.seq_length=16 train.global_batch_size=2 train.steps=2 train.warmup_steps=0"
SMALL_CALIB = "calib.num_samples=2 calib.seq_length=16"
SMALL_SPACE = SMALL_CALIB + (" prune.search.hidden_size_divisor=16 prune.search.ffn_hidden_size_divisor=32 "
                             "prune.search.num_layers_divisor=1 prune.search.max_width_pruning=0.5 "
                             "prune.search.max_depth_pruning=0.5")  # a search space of the tiny model

# (command, command line, what the one error line must contain[, the output whose lock another process holds])
CASES = [
    # -- info ---------------------------------------------------------------------------------------------------
    ("info", "info model.path={out}", "model.path={out}: no such file or directory"),
    ("info", "info model.path={model} info.seq_length=-5", "info.seq_length=-5: must be >= 1"),
    ("info", "info model.path={model} info.seq_length=abc", "info.seq_length: 'abc' is not a valid integer"),
    ("info", "info model.path={model} model.dtype=float8", "model.dtype='float8': use auto, float32"),
    ("info", "info model.path={zoo}/heads0", "config.json: num_attention_heads=0: must be >= 1"),
    ("info", "info model.path={zoo}/layers0", "config.json: num_hidden_layers=0: must be >= 1"),
    ("info", "info model.path={zoo}/odd_head_dim", "config.json: head_dim=15: must be even"),
    ("info", "info model.path={zoo}/no_config", "no config.json (expected a Hugging Face model directory)"),
    ("info", "info model.path={zoo}/bad_json", "config.json: malformed JSON"),
    ("info", "info model.path={zoo}/gpt2", "config.json: unsupported architecture model_type='gpt2'"),
    ("info", "info model.path={model} info.seq_lenght=5", "info.seq_lenght: no such setting (did you mean"),
    # -- convert ------------------------------------------------------------------------------------------------
    ("convert", "convert model.path={model}", "output is required: pass output=..."),
    ("convert", "convert model.path={out} output={out}/x", "model.path={out}: no such file or directory"),
    ("convert", "convert model.path={model} output={out} parallel.tp=0", "parallel.tp=0: must be >= 1"),
    ("convert", "convert model.path={model} output={out} parallel.tp=3",
     "parallel.tp=3 does not divide the model's num_attention_heads=4"),
    ("convert", "convert model.path={model} output={model}", "output={model} is the input model.path={model}"),
    ("convert", "convert model.path={model} output={zoo}/occupied", "output={zoo}/occupied already exists and holds"),
    ("convert", "convert model.path={model} output={out}", "output={out} is being written by another minitron "
     "process (pid 4242)", "{out}"),
    ("convert", "convert model.path={zoo}/heads0 output={out}", "config.json: num_attention_heads=0: must be >= 1"),
    # -- eval ---------------------------------------------------------------------------------------------------
    ("eval", "eval model.path={model} eval.seq_length=64", "data.path is required"),
    ("eval", "eval model.path={model} data.path={zoo}/tokens.bin eval.seq_length=64", "unsupported file type '.bin'"),
    ("eval", "eval model.path={model} data.path={zoo}/binary.txt eval.seq_length=64",
     "not a text file (a NUL byte at offset 0"),
    ("eval", "eval model.path={model} data.path={zoo}/latin1.txt eval.seq_length=64",
     "not a text file (invalid UTF-8 at byte 3)"),
    ("eval", "eval model.path={model} data.path={zoo}/bad.jsonl eval.seq_length=64", "line 2 is not valid JSON"),
    ("eval", "eval model.path={model} data.path={zoo}/no_field.jsonl eval.seq_length=64",
     "line 1 has no string field 'text'"),
    ("eval", "eval model.path={model} data.path={zoo}/fake.parquet eval.seq_length=64", "not a readable parquet file"),
    ("eval", "eval model.path={model} data.path={zoo}/occupied eval.seq_length=64",
     "the directory holds no .txt, .jsonl or .parquet"),
    ("eval", "eval model.path={model} data.path={zoo}/blank.txt eval.seq_length=64",
     "data.path={zoo}/blank.txt: holds no text"),
    ("eval", "eval model.path={model} data.path={text} eval.seq_length=1", "eval.seq_length=1: must be >= 2"),
    ("eval", "eval model.path={model} data.path={text} eval.seq_length=512",
     "eval.seq_length=512 exceeds the model's max_position_embeddings=256"),
    ("eval", "eval model.path={model} data.path={text} eval.micro_batch_size=0", "eval.micro_batch_size=0: must be"),
    ("eval", "eval model.path={model} data.path={text} eval.tags=[nokey]", "eval.tags: 'nokey' is not key=value"),
    ("eval", "eval model.path={model} data.path={text} output={text} eval.seq_length=64",
     "output={text} is the input data.path"),
    ("eval", "eval model.path={model} data.path={text} output={out} eval.seq_length=16",
     "output={out} is being written by another minitron process (pid 4242)", "{out}"),
    # -- data prepare -------------------------------------------------------------------------------------------
    ("data prepare", "data prepare model.path={model} output={out}", "data.path is required"),
    ("data prepare", "data prepare data.path={out}.txt model.path={model} output={out}", "no such file or directory"),
    ("data prepare", "data prepare data.path={zoo}/tokens.bin model.path={model} output={out}",
     "unsupported file type '.bin'"),
    ("data prepare", "data prepare data.path={zoo}/binary.txt model.path={model} output={out}",
     "not a text file (a NUL byte at offset 0"),
    ("data prepare", "data prepare data.path={zoo}/no_field.jsonl model.path={model} output={out}",
     "line 1 has no string field 'text'; set data.text_field="),
    ("data prepare", "data prepare data.path={zoo}/fake.parquet model.path={model} output={out}",
     "not a readable parquet file"),
    ("data prepare", "data prepare data.path={text} model.path={model} output={out} data.workers=0",
     "data.workers=0: must be >= 1; or null for the default"),
    ("data prepare", "data prepare data.path={text} model.path={model} output={out} data.text_field=''",
     "data.text_field is empty"),
    ("data prepare", "data prepare data.path={text} model.path={model} output={zoo}", "is a directory; output is a "
     "file prefix"),
    ("data prepare", "data prepare data.path={text} model.path={model} output={model}/config overwrite=true",
     "is inside the input model.path={model}"),
    ("data prepare", "data prepare data.path={text} model.path={zoo}/no_tokenizer output={out}",
     "no tokenizer files"),
    ("data prepare", "data prepare data.path={text} model.path={model} output={data}",
     "{data}.bin already exists; pass overwrite=true to replace it"),
    ("data prepare", "data prepare data.path={zoo}/corpus.jsonl model.path={model} output={zoo}/damaged",
     "output={zoo}/damaged: the dataset there is damaged"),
    ("data prepare", "data prepare data.path={text} model.path={model} output={out}",
     "output={out} is being written by another minitron process (pid 4242)", "{out}"),
    # -- train --------------------------------------------------------------------------------------------------
    ("train", "train model.path={model} output={out} " + SMALL_TRAIN, "data.path is required"),
    ("train", "train model.path={model} data.path={out} output={out}/run " + SMALL_TRAIN, "{out}.bin and {out}.idx "
     "not found"),
    ("train", "train model.path={model} data.path={zoo}/damaged output={out} " + SMALL_TRAIN,
     "{zoo}/damaged.bin holds"),
    ("train", "train model.path={model} data.path={zoo}/other_tokenizer output={out} " + SMALL_TRAIN,
     "was tokenized with another tokenizer"),
    ("train", "train model.path={model} data.path={data} output={out} train.seq_length=300",
     "train.seq_length=300 exceeds the model's max_position_embeddings=256"),
    ("train", "train model.path={model} data.path={data} output={out} train.lr=-1", "train.lr=-1.0: must be >= 0"),
    ("train", "train model.path={model} data.path={data} output={out} train.adam_beta2=1",
     "train.adam_beta2=1.0: must be >= 0 and < 1"),
    ("train", "train model.path={model} data.path={data} output={out} train.global_batch_size=3 "
     "train.micro_batch_size=2", "train.global_batch_size=3 is not divisible by train.micro_batch_size=2"),
    ("train", "train model.path={model} data.path={data} output={out} train.decay_style=step",
     "train.decay_style='step': use one of cosine"),
    ("train", "train model.path={model} data.path={data} output={out} train.seed=-3",
     "train.seed=-3: must be >= 0 and <= 4294967295"),
    ("train", "train model.path={model} data.path={data} output={zoo}/occupied " + SMALL_TRAIN,
     "is a non-empty directory that is not a training run"),
    ("train", "train model.path={model} data.path={data} output={out} model.init=scratch",
     "model.init='scratch': use one of pretrained, random"),
    ("train", "train model.path={model} data.path={data} output={out} train=nonexistent",
     "train=nonexistent: no such train config"),
    ("train", "train model.path={model} data.path={data} output={out} " + SMALL_TRAIN,
     "output={out} is being written by another minitron process (pid 4242)", "{out}"),
    # scale settings (train.scale, shared by distill): what this CPU build or the layout cannot do
    ("train", "train model.path={model} data.path={data} output={out} train.scale.sequence_parallel=true " + SMALL_TRAIN,
     "train.scale.sequence_parallel=true needs tensor parallelism (parallel.tp=1); add parallel.tp=2 or more"),
    ("train", "train model.path={model} data.path={data} output={out} train.scale.bias_activation_fusion=true "
     + SMALL_TRAIN, "train.scale.bias_activation_fusion=true needs a GPU (this machine has none)"),
    ("train", "train model.path={model} data.path={data} output={out} train.scale.rope_fusion=true " + SMALL_TRAIN,
     "train.scale.rope_fusion=true needs a GPU (this machine has none); set train.scale.rope_fusion=auto or false"),
    ("train", "train model.path={model} data.path={data} output={out} train.scale.cross_entropy_fusion=true "
     + SMALL_TRAIN, "train.scale.cross_entropy_fusion=true needs a GPU"),
    ("train", "train model.path={model} data.path={data} output={out} train.scale.gradient_accumulation_fusion=true "
     + SMALL_TRAIN, "train.scale.gradient_accumulation_fusion=true needs Transformer Engine or Apex's "
     "fused_weight_gradient_mlp_cuda on a GPU"),
    ("train", "train model.path={model} data.path={data} output={out} train.scale.overlap_param_gather=true "
     + SMALL_TRAIN, "train.scale.overlap_param_gather=true needs the distributed optimizer; add "
     "train.distributed_optimizer=true"),
    ("train", "train model.path={model} data.path={data} output={out} train.scale.recompute=all " + SMALL_TRAIN,
     "train.scale.recompute=all: use one of none, selective, full"),
    ("train", "train model.path={model} data.path={data} output={out} train.scale.recompute_num_layers=2 "
     + SMALL_TRAIN, "train.scale.recompute_num_layers=2 applies to full recomputation only"),
    ("train", "train model.path={model} data.path={data} output={out} train.scale.recompute=full "
     "train.scale.recompute_num_layers=9 " + SMALL_TRAIN, "train.scale.recompute_num_layers=9 exceeds the 4 layers"),
    ("train", "train model.path={model} data.path={data} output={out} train.scale.sequence_parallel=maybe "
     + SMALL_TRAIN, "train.scale.sequence_parallel=maybe: use auto, true or false"),
    # -- importance ---------------------------------------------------------------------------------------------
    ("importance", "importance model.path={model} data.path={text}", "output is required"),
    ("importance", "importance model.path={model} data.path={text} output={out} calib.num_samples=0",
     "calib.num_samples=0: must be >= 1"),
    ("importance", "importance model.path={model} data.path={text} output={out} importance.depth_metrics=[bi]",
     "importance.depth_metrics: unknown ['bi']"),
    ("importance", "importance model.path={model} data.path={text} output={out} importance.window_sizes=[0]",
     "importance.window_sizes=[0]: every size must be >= 1"),
    ("importance", "importance model.path={model} data.path={zoo}/latin1.txt output={out} " + SMALL_CALIB,
     "not a text file (invalid UTF-8"),
    ("importance", "importance model.path={model} data.path={text} output={zoo}/occupied " + SMALL_CALIB,
     "output={zoo}/occupied already exists and is not empty"),
    ("importance", "importance model.path={model} data.path={text} output={out} calib.num_samples=100000 "
     "calib.seq_length=16", "calib.num_samples=100000"),
    ("importance", "importance model.path={model} data.path={text} output={out} " + SMALL_CALIB,
     "output={out} is being written by another minitron process (pid 4242)", "{out}"),
    # -- prune --------------------------------------------------------------------------------------------------
    ("prune", "prune model.path={model} data.path={text} output={out} prune.hidden_size=0 " + SMALL_CALIB,
     "prune.hidden_size=0: must be >= 1"),
    ("prune", "prune model.path={model} data.path={text} output={out} prune.hidden_size=1000 " + SMALL_CALIB,
     "prune.hidden_size=1000 is larger than the source's hidden_size=64"),
    ("prune", "prune model.path={model} data.path={text} output={out} prune.drop_layers=[9] " + SMALL_CALIB,
     "prune.drop_layers: unknown layer index 9"),
    ("prune", "prune model.path={model} data.path={text} output={out} prune.num_layers=2 prune.drop_layers=[1] "
     + SMALL_CALIB, "prune.num_layers and prune.drop_layers are exclusive"),
    ("prune", "prune model.path={model} data.path={text} output={out} prune.ranking=best " + SMALL_CALIB,
     "prune.ranking='best': use one of importance, random"),
    ("prune", "prune model.path={model} data.path={text} output={out} prune.num_layers=2 prune.depth_metric=x "
     + SMALL_CALIB, "prune.depth_metric='x': use one of"),
    ("prune", "prune model.path={model} data.path={text} output={text} prune.ffn_hidden_size=64 " + SMALL_CALIB,
     "output={text} is the input data.path"),
    ("prune", "prune model.path={model} data.path={text} output={out} prune.ffn_hidden_size=64 " + SMALL_CALIB,
     "output={out} is being written by another minitron process (pid 4242)", "{out}"),
    # -- prune to a budget (architecture search) ------------------------------------------------------------------
    ("prune", "prune model.path={model} data.path={text} output={out} prune.target.params=1e6 " + SMALL_SPACE,
     "prune.target.params=1e+06 is not smaller than the model's 205,376: nothing to prune"),
    ("prune", "prune model.path={model} data.path={text} output={out} prune.target.non_embedding_params=1000 "
     + SMALL_SPACE, "prune.target.non_embedding_params=1000: no candidate of the search space within [950, 1,000] "
     "(space: hidden_size 32..64, ffn_hidden_size 96..160, heads_per_group 1..2, num_query_groups 2..2, num_layers "
     "2..4; the closest is L2-h32-f96-a2g2 with non_embedding_params 26,784); raise prune.target.tolerance"),
    ("prune", "prune model.path={model} data.path={text} output={out} prune.target.params=1e5 "
     "prune.target.memory_gb=1 " + SMALL_SPACE, "prune.target: two primary budgets at once (prune.target.params, "
     "prune.target.memory_gb); set exactly one of them"),
    ("prune", "prune model.path={model} data.path={text} output={out} prune.target.params=1e5 " + SMALL_SPACE
     + " prune.search.hidden_size_divisor=7", "prune.search.hidden_size_divisor=7 does not divide the model's "
     "hidden_size=64; use a divisor of 64 (e.g. 2, 4, 8, 16, 32, 64)"),
    ("prune", "prune model.path={model} data.path={text} output={out} prune.target.params=1e5 prune.hidden_size=32 "
     + SMALL_SPACE, "prune.target.params searches the shape; it cannot be combined with explicit sizes "
     "(prune.hidden_size)"),
    # -- distill ------------------------------------------------------------------------------------------------
    ("distill", "distill teacher.path={model} student.path={model} data.path={data} output={out} "
     "distill.temperature=0", "distill.temperature=0.0: must be > 0"),
    ("distill", "distill teacher.path={model} student.path={model} data.path={data} output={out} distill.loss=topk",
     "distill.loss=topk needs distill.topk=K"),
    ("distill", "distill teacher.path={model} student.path={model} data.path={data} output={out} distill.topk=300 "
     "distill.loss=topk " + SMALL_TRAIN, "distill.topk=300 exceeds the vocabulary (256 tokens)"),
    ("distill", "distill teacher.path={out} student.path={model} data.path={data} output={out}/run",
     "teacher.path={out}: no such file or directory"),
    ("distill", "distill teacher.path={model} student.path={model} data.path={data} output={out} "
     "distill.hidden_pairs=[[9,0]] " + SMALL_TRAIN, "distill.hidden_pairs: student layer 9 in [9, 0] is out of "
     "range"),
    ("distill", "distill teacher.path={model} student.path={model} data.path={zoo}/other_tokenizer output={out} "
     + SMALL_TRAIN, "was tokenized with another tokenizer"),
    ("distill", "distill teacher.path={model} student.path={model} data.path={data} output={out} "
     + SMALL_TRAIN, "output={out} is being written by another minitron process (pid 4242)", "{out}"),
    ("distill", "distill teacher.path={model} student.path={model} data.path={data} output={out} "
     "train.scale.sequence_parallel=true " + SMALL_TRAIN, "train.scale.sequence_parallel=true needs tensor parallelism"),
    # -- pipeline -----------------------------------------------------------------------------------------------
    # -- sft, dpo and their data ----------------------------------------------------------------------------------
    ("data", "data prepare data.format=preference data.path={zoo}/align/no_chosen.jsonl model.path={model} output={out} "
     "data.chat_template={zoo}/chatml.jinja", "no_chosen.jsonl: line 2: no string field 'chosen'"),
    ("data", "data prepare data.format=preference data.path={zoo}/align/empty_answer.jsonl model.path={model} "
     "output={out} data.chat_template={zoo}/chatml.jinja", "line 1: field 'rejected' is an empty answer"),
    ("data", "data prepare data.format=preference data.path={zoo}/align/pairs.jsonl model.path={model} output={out}",
     "its tokenizer has no chat template; pass data.chat_template=FILE"),
    ("data", "data prepare data.format=sft data.path={zoo}/align/long_prompt.jsonl model.path={model} output={out} "
     "data.chat_template={zoo}/chatml.jinja data.seq_length=32 data.truncation=off",
     "longer than data.seq_length=32 and data.truncation=off; raise data.seq_length"),
    ("data", "data prepare data.format=chat data.path={zoo}/align/pairs.jsonl model.path={model} output={out}",
     "data.format='chat': use one of text, sft, preference"),
    ("dpo", "dpo model.path={model} reference.path={other} data.path={zoo}/prefs output={out} train.seq_length=96 "
     "train.global_batch_size=2 train.steps=1", "reference.path={other} has another tokenizer than model.path"),
    ("dpo", "dpo model.path={model} data.path={data} output={out} train.seq_length=96",
     "data.path={data}: not a preference dataset"),
    ("dpo", "dpo model.path={model} data.path={zoo}/prefs output={out} align.loss=kto", "align.loss='kto': use one of"),
    ("rewards", "rewards model.path={model} data.path={data} rewards.seq_length=96",
     "data.path={data}: not a preference dataset"),
    ("rewards", "rewards model.path={model} reference.path={other} data.path={zoo}/prefs rewards.seq_length=96",
     "reference.path="),
    ("rewards", "rewards model.path={model} data.path={zoo}/prefs rewards.seq_length=96 rewards.micro_batch_size=0",
     "rewards.micro_batch_size=0: must be >= 1"),
    # -- plan ---------------------------------------------------------------------------------------------------
    ("plan", "plan model.path=nonexistent_arch", "model.path=nonexistent_arch: no such file or directory, nor an "
     "architecture name"),
    ("plan", "plan model.path={model} parallel.tp=3", "parallel.tp=3 does not divide the model's"),
    ("plan", "plan model.path={model} plan.stage=distill", "plan.stage=distill needs plan.teacher=TEACHER"),
    ("sft", "sft model.path={model} data.path={zoo}/prefs output={out} train.seq_length=96",
     "not a sft dataset (format minitron-chat-dataset, kind preference)"),
    # -- evaluate, generate, bench ------------------------------------------------------------------------------
    ("evaluate", "evaluate model.path={model} output={out} eval.tasks=[nosuch]",
     "eval.tasks: unknown task 'nosuch'; known tasks: mmlu, hellaswag"),
    ("evaluate", "evaluate model.path={model} output={out} eval.batch_size=0", "eval.batch_size=0: must be >= 1"),
    ("evaluate", "evaluate model.path={model} output={out} eval.data_dir={out}/nowhere eval.tasks=[arc_easy]",
     "eval.data_dir={out}/nowhere: no such directory"),
    ("evaluate", "evaluate model.path={model} output={out} eval.num_fewshot=-1", "eval.num_fewshot=-1: must be >= 0"),
    ("generate", "generate model.path={model} generate.max_new_tokens=0 prompt=hi",
     "generate.max_new_tokens=0: must be >= 1"),
    ("generate", "generate model.path={model}", "prompt is required: pass prompt=..."),
    ("generate", "generate model.path={model} prompt=hi generate.top_p=2", "generate.top_p=2.0: must be > 0 and <= 1"),
    ("bench", "bench model.path={model} bench.batch=0", "bench.batch=0: must be >= 1"),
    ("bench", "bench model.path={out}", "model.path={out}: no such file or directory"),
    ("pipeline", "pipeline recipe=demo_smolm2 output={out}", "recipe=demo_smolm2: no such recipe config"),
    ("pipeline", "pipeline recipe.budget.steps=0 output={out}", "recipe.budget.steps=0: must be >= 1"),
    ("pipeline", "pipeline recipe.parallel.tp=0 output={out}", "parallel.tp=0: must be >= 1"),
    ("pipeline", "pipeline recipe.teacher={out}/teacher recipe.assets=[] output={out}",
     "recipe.teacher={out}/teacher: no such directory"),
    ("pipeline", "pipeline recipe.teacher={model} recipe.assets=[] recipe.distill_args=['train.steps=5'] "
     "output={out}", "recipe.distill_args: 'train.steps=5' sets the token budget per stage; set recipe.budget"),
    # -- assets -------------------------------------------------------------------------------------------------
    ("assets", "assets fetch no-such-asset", "no-such-asset"),
    ("assets", "assets fetch sotu", "asset sotu ({home}/corpus/sotu) is being written by another minitron process "
     "(pid 4242)", "{home}/corpus/sotu"),
]  # fmt: skip


def _write_model_variant(source: Path, out: Path, **config_changes) -> Path:
    shutil.copytree(source, out)
    config = json.loads((out / "config.json").read_text())
    config.update(config_changes)
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="module")
def zoo(tiny_models, tmp_path_factory) -> dict:
    """The inputs of the cases (see the module docstring)."""
    import pyarrow
    import pyarrow.parquet

    from minitron.data.prepare import prepare_dataset
    from test_verified_reads import swapped_tokenizer

    root = tmp_path_factory.mktemp("zoo")
    model = Path(shutil.copytree(tiny_models["llama31"], root / "model"))
    z = root / "bad"
    z.mkdir()
    _write_model_variant(model, z / "heads0", num_attention_heads=0)
    _write_model_variant(model, z / "layers0", num_hidden_layers=0)
    _write_model_variant(model, z / "odd_head_dim", head_dim=15)
    _write_model_variant(model, z / "gpt2", model_type="gpt2")
    shutil.copytree(model, z / "no_config")
    (z / "no_config" / "config.json").unlink()
    shutil.copytree(model, z / "bad_json")
    (z / "bad_json" / "config.json").write_text('{"model_type": "llama",')
    shutil.copytree(model, z / "no_tokenizer")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (z / "no_tokenizer" / name).unlink()
    (z / "tokens.bin").write_bytes(np.arange(500, dtype=np.uint16).tobytes())
    (z / "binary.txt").write_bytes((z / "tokens.bin").read_bytes())
    (z / "latin1.txt").write_bytes("caf\xe9 au lait ".encode("latin-1") * 20)
    (z / "bad.jsonl").write_text('{"text": "fine"}\n{"text": "cut off\n')
    (z / "no_field.jsonl").write_text('{"body": "the text is under another key"}\n')
    (z / "fake.parquet").write_text("a text file named .parquet\n")
    (z / "blank.txt").write_text("   \n\n")
    (z / "occupied").mkdir()
    (z / "occupied" / "notes.md").write_text("someone's notes\n")
    text = root / "text.txt"
    text.write_text(" ".join(WORDS.split() * 60))
    corpus = z / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"{WORDS} {i}"}) + "\n" for i in range(60)))
    data = root / "data"
    prepare_dataset(corpus, model, data, workers=1, progress=False)
    prepare_dataset(corpus, model, z / "damaged", workers=1, progress=False)
    damaged = bytearray(Path(f"{z / 'damaged'}.bin").read_bytes())
    Path(f"{z / 'damaged'}.bin").write_bytes(bytes(damaged) + bytes(64))  # a writer's zeros appended
    other = swapped_tokenizer(Path(shutil.copytree(model, root / "other_model")))
    prepare_dataset(corpus, other, z / "other_tokenizer", workers=1, progress=False)
    pyarrow.parquet.write_table(pyarrow.table({"text": [WORDS]}), z / "good.parquet")
    _align_zoo(z, model)
    return {"root": root, "model": model, "zoo": z, "text": text, "data": data, "other": other}


def _align_zoo(z: Path, model: Path) -> None:
    """Chat/preference rows for the sft/dpo cases, a ChatML template file and a prepared preference dataset."""
    from tests.align.align_helpers import CHATML, prepare, preference_rows, write_jsonl

    (z / "align").mkdir()
    (z / "chatml.jinja").write_text(CHATML)
    write_jsonl(z / "align" / "pairs.jsonl", preference_rows(2))
    write_jsonl(z / "align" / "no_chosen.jsonl", [preference_rows(1)[0], {"prompt": "p", "rejected": "r"}])
    write_jsonl(z / "align" / "empty_answer.jsonl", [{"prompt": "p", "chosen": "c", "rejected": ""}])
    write_jsonl(z / "align" / "long_prompt.jsonl", [{"prompt": "x" * 50, "completion": "y"}])
    prepare(z, model, "preference", preference_rows(4), seq_length=96)
    Path(f"{z / 'preference'}.bin").rename(f"{z / 'prefs'}.bin")
    for suffix in (".idx", ".json", ".mask.bin", ".mask.idx", ".reward.bin", ".reward.idx"):
        Path(f"{z / 'preference'}{suffix}").rename(f"{z / 'prefs'}{suffix}")


@pytest.mark.parametrize("command,line,message,lock", [(*case, None)[:4] for case in CASES],
                         ids=[f"{i:02d} {case[1][:60]}" for i, case in enumerate(CASES)])  # fmt: skip
def test_bad_input(command, line, message, lock, zoo, tmp_path, monkeypatch, capfd):
    home = tmp_path / "home"
    monkeypatch.setenv("MINITRON_HOME", str(home))
    values = {**{k: v for k, v in zoo.items() if k != "root"}, "out": tmp_path / "out", "home": home}
    argv = line.format(**values).split()
    with hold_lock(lock.format(**values)) if lock else _nothing():
        before = tree_snapshot(zoo["root"], tmp_path)
        code, stdout, stderr = run_minitron(monkeypatch, capfd, *argv)
        after = tree_snapshot(zoo["root"], tmp_path)
    assert code == 2, (code, stdout[-500:], stderr[-3000:])
    assert stdout == "" or command == "assets" and stdout.startswith("[assets] cache: ")  # its progress
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
    assert message.format(**values) in lines[0], lines[0]
    assert after == before, "nothing written, nothing changed"


def _nothing():
    import contextlib

    return contextlib.nullcontext()


def test_every_command_has_bad_inputs():
    """At least 60 distinct cases, every command that exists among them."""
    from minitron.commands import COMMANDS

    assert len({case[1] for case in CASES}) == len(CASES) >= 60
    tried = {case[0].split()[0] for case in CASES}
    assert tried == set(COMMANDS), set(COMMANDS) - tried
