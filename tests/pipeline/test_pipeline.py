"""`minitron pipeline`: a tiny recipe end to end; killed in the middle of a stage it resumes and finishes;
finished stages are skipped; a changed recipe is refused; bad recipes are refused before anything runs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import MINITRON, REPO, clean_env, last_json, run_cli
from tiny_models import make_tiny_model, save_char_tokenizer

WORDS = "the of and to in is was for on that with as by at from this be are an or it which has had not".split()


@pytest.fixture(scope="module")
def teacher_model(tmp_path_factory) -> Path:
    """The teacher of the tiny recipe: 4-layer SmolLM2-like (hidden 96, 6 heads in 2 groups, tied), 256 tokens."""
    out = make_tiny_model("smollm2", tmp_path_factory.mktemp("pipeline_teacher") / "hf", num_layers=4, seed=1)
    save_char_tokenizer(out)
    return out


def write_text(path: Path, seed: int, documents: int, words: int) -> Path:
    import random

    rng = random.Random(seed)
    lines = [json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(words))}) for _ in range(documents)]
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_recipe(root: Path, teacher_dir: Path, steps: int = 40, **changes) -> Path:
    """A recipe directory for `hydra.searchpath`: recipe/tiny.yaml, every stage on the tiny teacher."""
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    recipe = {
        "name": "tiny",
        "description": "tiny teacher, width and depth students",
        "teacher": str(teacher_dir),
        "data": {
            "train": str(write_text(data / "train.jsonl", 0, 40, 200)),
            "calib": str(write_text(data / "calib.jsonl", 1, 8, 200)),
            "heldout": str(write_text(data / "heldout.jsonl", 2, 8, 200)),
        },
        "teacher_correction": {
            "enabled": True,
            "args": [
                "train.steps=2",
                "train.global_batch_size=2",
                "train.micro_batch_size=2",
                "train.seq_length=32",
                "train.eval_interval=0",
                "train.warmup_steps=0",
            ],
        },
        "importance_args": [
            "calib.num_samples=4",
            "calib.seq_length=32",
            "calib.micro_batch_size=2",
            "importance.plots=false",
        ],
        "students": {
            "width": {"prune": {"hidden_size": 48, "ffn_hidden_size": 128}, "from_scratch": True},
            "depth": {"prune": {"num_layers": 2}},
        },
        "budget": {"steps": steps, "global_batch_size": 2, "micro_batch_size": 2, "seq_length": 32},
        "distill_args": [
            "train.lr=1e-3",
            "train.warmup_steps=0",
            "train.eval_interval=0",
            "checkpoint.interval=2",
            "logging.progress=false",
        ],
        "scratch_args": ["train.lr=1e-3", "train.warmup_steps=0", "train.eval_interval=0", "checkpoint.interval=10"],
        "eval_args": ["eval.seq_length=32", "eval.max_windows=4"],
    }
    recipe.update(changes)
    (root / "recipe").mkdir(exist_ok=True)
    (root / "recipe" / "tiny.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return root


def pipeline_args(conf: Path, run: Path, *extra) -> list[str]:
    return ["pipeline", f"hydra.searchpath=[file://{conf}]", "recipe=tiny", f"output={run}", *extra]


def manifest(run: Path) -> dict:
    return json.loads((run / "pipeline.json").read_text())["stages"]


@pytest.mark.slow
def test_pipeline_killed_mid_stage_resumes_and_finishes(teacher_model, tmp_path):
    conf, run = tiny_recipe(tmp_path / "conf", teacher_model), tmp_path / "run"
    argv = [*MINITRON, *pipeline_args(conf, run)]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO, env=clean_env())
    latest = run / "students" / "width" / "distilled" / "checkpoints" / "latest"
    deadline = time.time() + 600
    while not latest.exists():  # kill once the distillation of the width student has saved a checkpoint
        assert first.poll() is None, f"pipeline ended before the kill:\n{first.stdout.read().decode()[-4000:]}"
        assert time.time() < deadline
        time.sleep(0.05)
    children = psutil.Process(first.pid).children(recursive=True)
    first.send_signal(signal.SIGKILL)
    first.wait()
    psutil.wait_procs(children, timeout=30)  # the stage dies with the pipeline (parent-death signal)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    stages = manifest(run)
    assert stages["distill_width"]["status"] == "running", stages["distill_width"]
    assert all(stages[name]["status"] == "done" for name in ("data", "teacher_correction", "importance", "prune_width"))
    assert "distill_depth" not in stages

    second = run_cli(*pipeline_args(conf, run), timeout=900)
    assert second.returncode == 0, second.stderr[-4000:]
    stages = manifest(run)
    assert {record["status"] for record in stages.values()} == {"done"}
    assert stages["distill_width"]["attempts"] == 2 and stages["prune_width"]["attempts"] == 1
    resumed = stages["distill_width"]["result"]
    assert resumed["resumed_from"] is not None and resumed["steps"] == 40 and resumed["steps_this_run"] < 40
    assert "importance: done earlier" in second.stderr and "[1/" in second.stderr
    summary = json.loads((run / "summary.json").read_text())
    rows = {row["name"]: row for row in summary["models"]}
    assert set(rows) == {
        "teacher",
        "teacher, corrected",
        "width, pruned",
        "width, distilled",
        "width, from scratch",
        "depth, pruned",
        "depth, distilled",
    }
    assert all(row["heldout_loss"] is not None for row in rows.values())
    assert rows["teacher, corrected"]["kl"] in (None, 0.0) and rows["width, distilled"]["kl"] > 0
    assert rows["width, pruned"]["non_embedding_params"] < rows["teacher"]["non_embedding_params"]
    assert rows["width, distilled"]["train_tokens"] == rows["width, from scratch"]["train_tokens"] == 40 * 2 * 32
    report = (run / "report.md").read_text()
    assert "width, distilled" in report and (run / "loss_curves.png").stat().st_size > 0
    assert (run / "students" / "width" / "hf" / "config.json").is_file()  # exported for transformers
    assert last_json(second.stdout)["report"] == str(run / "report.md")

    # everything done: a third run skips every stage and changes nothing
    before = (run / "pipeline.json").read_text()
    third = run_cli(*pipeline_args(conf, run), timeout=300)
    assert third.returncode == 0, third.stderr[-3000:]
    assert third.stderr.count("done earlier") == len(manifest(run))
    assert json.loads(before)["stages"] == json.loads((run / "pipeline.json").read_text())["stages"]

    # the recipe changed under a finished run: refused, naming the stage and the setting, nothing rerun
    changed = run_cli(*pipeline_args(conf, run, "recipe.budget.steps=50"), timeout=300)
    assert changed.returncode == 2
    assert "stage distill_width" in changed.stderr and "train.steps=50" in changed.stderr
    assert json.loads(before)["stages"] == json.loads((run / "pipeline.json").read_text())["stages"]


def test_dry_run_lists_the_stages_in_order_and_runs_nothing(teacher_model, tmp_path):
    conf, run = tiny_recipe(tmp_path / "conf", teacher_model), tmp_path / "run"
    result = run_cli(*pipeline_args(conf, run, "dry_run=true"))
    assert result.returncode == 0, result.stderr[-3000:]
    names = [stage["name"] for stage in last_json(result.stdout)["stages"]]
    assert names == [
        "data",
        "teacher_correction",
        "teacher_export",
        "importance",
        "prune_width",
        "prune_depth",
        "distill_width",
        "distill_depth",
        "scratch_width",
        "eval_teacher",
        "eval_teacher_corrected",
        "eval_width_pruned",
        "eval_width_distilled",
        "eval_width_from_scratch",
        "eval_depth_pruned",
        "eval_depth_distilled",
        "export_width",
        "export_depth",
        "report",
    ]
    assert "importance.window_sizes=[2]" in result.stderr  # the depth student's window, estimated once
    assert not run.exists()
    # the training stages' memory plans: now for the teacher correction, once the pruned model exists for the others
    lines = result.stderr.splitlines()
    plan = lines[[i for i, line in enumerate(lines) if "teacher_correction " in line][0] + 1]
    assert "memory plan: " in plan and " GiB per rank (weights " in plan
    assert f"memory plan: once {run / 'students' / 'width' / 'pruned'} exists" in result.stderr


def test_a_training_stage_that_does_not_fit_the_device_is_refused(teacher_model, tmp_path):
    conf, run = tiny_recipe(tmp_path / "conf", teacher_model), tmp_path / "run"
    dry = run_cli(*pipeline_args(conf, run, "dry_run=true", "device_memory_gb=0.001"))
    assert dry.returncode == 0 and "DOES NOT FIT" in dry.stderr
    result = run_cli(*pipeline_args(conf, run, "device_memory_gb=0.001"), timeout=600)
    assert result.returncode == 2, result.stderr[-2000:]
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: stage teacher_correction (`minitron train`): needs ") and "GiB per rank" in line
    assert "add " in line and "to the recipe's arguments of this stage" in line
    assert not (run / "teacher_corrected").exists()


def test_a_launcher_that_cannot_start_is_refused_before_the_first_stage(teacher_model, tmp_path):
    conf, run = tiny_recipe(tmp_path / "conf", teacher_model), tmp_path / "run"
    result = run_cli(*pipeline_args(conf, run, "launcher='no-such-launcher --nproc-per-node 2'"))
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: launcher='no-such-launcher --nproc-per-node 2': no-such-launcher is not on PATH"), line
    assert not run.exists()


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"students": {}}, "recipe.students is empty"),
        ({"distill_args": ["train.steps=7"]}, "recipe.distill_args: 'train.steps=7' sets the token budget"),
        ({"students": {"w": {"prune": {"hidden": 3}}}}, "recipe.students.w.prune: unknown ['hidden']"),
        ({"teacher": "/nonexistent/teacher"}, "recipe.teacher=/nonexistent/teacher: no such directory"),
        ({"benchmarks": {"tasks": ["mmlu", "winogrand"]}}, "eval.tasks: unknown task 'winogrand'; known tasks: mmlu, "),
        ({"benchmarks": {"tasks": ["mmlu"], "limits": {"hellaswag": 5}}},
         "recipe.benchmarks.limits.hellaswag: hellaswag is not in recipe.benchmarks.tasks=['mmlu']"),
        ({"benchmarks": {"tasks": ["mmlu"], "args": ["eval.tasks=[piqa]"]}},
         "recipe.benchmarks.args: 'eval.tasks=[piqa]' is set by the pipeline"),
    ],
)
def test_bad_recipes_are_refused_before_anything_runs(teacher_model, tmp_path, changes, message):
    conf, run = tiny_recipe(tmp_path / "conf", teacher_model, **changes), tmp_path / "run"
    result = run_cli(*pipeline_args(conf, run))
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr and result.stderr.count("error:") == 1
    assert not run.exists()


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"distill_args": ["distill.temprature=2"]},
         "stage distill_width (`minitron distill`): distill.temprature: no such setting (did you mean "
         "distill.temperature?)"),
        ({"scratch_args": ["train.lr=fast"]}, "stage scratch_width (`minitron train`): train.lr: 'fast' is not a valid float"),
        ({"eval_args": ["eval.seq_length=1"]}, "stage eval_teacher (`minitron eval`): eval.seq_length=1: must be >= 2"),
        ({"importance_args": ["calib.num_sample=4"]},
         "stage importance (`minitron importance`): calib.num_sample: no such setting (did you mean calib.num_samples?)"),
        ({"teacher_correction": {"enabled": True, "args": ["train=teacher_corection"]}},
         "stage teacher_correction (`minitron train`): train=teacher_corection: no such train config (did you mean "
         "train=teacher_correction?)"),
        ({"assets": ["smollm2"]}, "stage assets (`minitron assets`): unknown asset 'smollm2'"),
        ({"benchmarks": {"tasks": ["piqa"], "args": ["eval.batch_sise=4"]}},
         "stage tasks_teacher (`minitron evaluate`): eval.batch_sise: no such setting (did you mean eval.batch_size?)"),
        ({"benchmarks": {"tasks": ["piqa"], "fewshot": {"piqa": -1}}},
         "recipe.benchmarks.fewshot.piqa=-1: must be >= 0"),
        ({"throughput": {"enabled": True, "args": ["bench.output_len=0"]}},
         "stage bench_teacher (`minitron bench`): bench.output_len=0: must be >= 1"),
    ],
)
def test_a_typo_in_any_stage_fails_before_the_first_stage(teacher_model, tmp_path, changes, message):
    """Every stage's config is composed and checked up front: seconds, not days into the run."""
    conf, run = tiny_recipe(tmp_path / "conf", teacher_model, **changes), tmp_path / "run"
    for extra in ([], ["dry_run=true"]):
        started = time.perf_counter()
        result = run_cli(*pipeline_args(conf, run, *extra))
        assert result.returncode == 2, result.stderr[-2000:]
        (line,) = result.stderr.strip().splitlines()
        assert line == f"error: {message}" or line.startswith(f"error: {message}"), line
        assert time.perf_counter() - started < 60 and not run.exists()


def test_a_second_pipeline_on_the_same_run_is_refused(teacher_model, tmp_path):
    import fcntl

    from minitron.fsutil import lock_path

    conf, run = tiny_recipe(tmp_path / "conf", teacher_model), tmp_path / "run"
    run.mkdir()
    with open(lock_path(run), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write("4242")
        lock.flush()
        result = run_cli(*pipeline_args(conf, run))
    (line,) = result.stderr.strip().splitlines()
    assert result.returncode == 2 and line == (
        f"error: output={run} is being written by another minitron process (pid 4242); wait for it to finish or "
        "stop it first"
    )
    assert not (run / "pipeline.json").exists()


def test_shipped_recipes_compose_and_plan():
    from hydra import compose, initialize_config_dir

    from minitron.config import schema
    from minitron.pipeline.runner import validate_stages
    from minitron.pipeline.stages import plan_stages

    schema.register()
    recipes = sorted(p.stem for p in (Path(schema.CONF_DIR) / "recipe").glob("*.yaml"))
    assert "demo_smollm2" in recipes
    with initialize_config_dir(config_dir=schema.CONF_DIR, version_base=None):
        for name in recipes:
            cfg = schema.to_object(compose("pipeline", overrides=[f"recipe={name}"]))
            cfg.recipe.validate()
            stages = plan_stages(cfg, teacher_exists=False)
            distill = [s for s in stages if s.command == "distill"]
            assert distill and stages[-1].name == "report"
            for stage in stages:  # the same token budget for every distillation and baseline
                if stage.name.startswith(("distill_", "scratch_")):
                    assert set(cfg.recipe.budget.args()) <= set(stage.args)
            validate_stages(stages)  # every stage's config composes and passes its schema's checks
        demo = schema.to_object(compose("pipeline")).recipe  # the default recipe is the demo
    assert demo.name == "demo_smollm2" and demo.budget.tokens == 14 * 8 * 512
    assert demo.students["width"].from_scratch and os.path.basename(demo.teacher) == "smollm2-135m"
    # the paper's recipe scores every model with the paper's tasks and shots (Table 1)
    with initialize_config_dir(config_dir=schema.CONF_DIR, version_base=None):
        paper = schema.to_object(compose("pipeline", overrides=["recipe=llama31_8b_minitron_4b"]))
    stages = {stage.name: stage for stage in plan_stages(paper, teacher_exists=False)}
    evaluated = [name for name in stages if name.startswith("tasks_")]
    assert evaluated == ["tasks_teacher", "tasks_teacher_corrected", "tasks_width_pruned", "tasks_width_distilled",
                         "tasks_width_aligned", "tasks_depth_pruned", "tasks_depth_distilled",
                         "tasks_depth_aligned"]  # fmt: skip
    # and aligns both students as the paper did: math/code SFT, instruction SFT, then 2 rounds of RPO
    for student in ("width", "depth"):
        assert [stages[f"sft_{student}_{k}"].command for k in (1, 2)] == ["sft", "sft"]
        assert f"model.path={stages[f'sft_{student}_1'].output}/final" in stages[f"sft_{student}_2"].args
        rpo = stages[f"dpo_{student}"]
        assert {"align.loss=rpo_bwd_kl", "align.rounds=2"} <= set(rpo.args)
        assert f"model.path={stages[f'sft_{student}_2'].output}/final" in rpo.args
    for shots in ("mmlu=5", "winogrande=5", "hellaswag=10", "arc_challenge=25", "gsm8k=5"):
        assert f"+eval.fewshot.{shots}" in stages["tasks_width_distilled"].args
    assert [name for name in stages if name.startswith("bench_")] == ["bench_teacher", "bench_width_distilled",
                                                                      "bench_depth_distilled"]  # fmt: skip


@pytest.mark.slow
def test_pipeline_at_tp2_under_the_torchrun_launcher(teacher_model, tmp_path):
    """The parallel stages run under `launcher=` (launch/node_torchrun.sh, as on Slurm) with 2 processes at TP=2;
    task accuracy and throughput of every model land in the report's tables and plot."""
    from conftest import free_port
    from tiny_benchmarks import write_tiny_benchmarks

    benchmarks = write_tiny_benchmarks(tmp_path / "benchmarks")
    conf = tiny_recipe(
        tmp_path / "conf",
        teacher_model,
        steps=2,
        parallel={"tp": 2, "pp": 1},
        teacher_correction={"enabled": False, "args": []},
        students={"width": {"prune": {"hidden_size": 48, "ffn_hidden_size": 128}}},
        benchmarks={"tasks": ["arc_easy", "winogrande"], "limits": {"arc_easy": 4, "winogrande": 5},
                    "args": [f"eval.data_dir={benchmarks}", "eval.batch_size=4"]},
        throughput={"enabled": True, "args": ["bench.prompt_len=16", "bench.output_len=4", "bench.repeats=1"]},
    )
    run = tmp_path / "run"
    launcher = f"launcher={REPO / 'launch' / 'node_torchrun.sh'}"
    result = run_cli(
        *pipeline_args(conf, run, launcher),
        timeout=900,
        env={
            "NPROC": "2",
            "MASTER_PORT": str(free_port()),  # torchrun of this venv, as when activated
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        },
    )
    assert result.returncode == 0, result.stderr[-4000:]
    stages = manifest(run)
    assert [name for name in stages] == [
        "data",
        "importance",
        "prune_width",
        "distill_width",
        "eval_teacher",
        "eval_width_pruned",
        "eval_width_distilled",
        "tasks_teacher",
        "tasks_width_pruned",
        "tasks_width_distilled",
        "bench_teacher",
        "bench_width_distilled",
        "export_width",
        "report",
    ]
    log = (run / "logs" / "distill_width.log").read_text()
    assert "node_torchrun.sh" in log and "TP=2 PP=1 DP=1" in log
    assert stages["distill_width"]["result"]["steps"] == 2
    assert stages["eval_width_distilled"]["result"]["kl"] > 0
    assert "TP=2 PP=1 DP=1" in (run / "logs" / "tasks_width_distilled.log").read_text()

    # the report's rows carry each model's own task results and its architecture's measured speed
    summary = json.loads((run / "summary.json").read_text())
    rows = {row["name"]: row for row in summary["models"]}
    for name in ("teacher", "width, pruned", "width, distilled"):
        tasks = json.loads((run / "tasks" / name.replace(", ", "_") / "results.json").read_text())["minitron"]["tasks"]
        assert rows[name]["tasks"] == tasks and tasks["arc_easy"]["items"] == 4 and tasks["winogrande"]["items"] == 5
    timed = {entry["name"]: entry for entry in summary["throughput"]}
    assert set(timed) == {"teacher", "width, distilled"}
    for name, entry in timed.items():
        result = stages[f"bench_{name.replace(', ', '_')}"]["result"]
        assert entry["decode_tokens_per_s"] == result["megatron"]["decode_tokens_per_s"] > 0
        assert entry["params"] == rows[name]["params"] and result["tp"] == 2
    report = (run / "report.md").read_text()
    pruned = rows["width, pruned"]["tasks"]
    average = (pruned["arc_easy"]["value"] + pruned["winogrande"]["value"]) / 2
    assert "## Task accuracy" in report and "## Throughput" in report
    assert f"| width, pruned | {100 * rows['width, pruned']['tasks']['arc_easy']['value']:.1f} ± " in report
    assert f" | {100 * average:.1f} ± " in report
    ratio = timed["width, distilled"]["decode_tokens_per_s"] / timed["teacher"]["decode_tokens_per_s"]
    assert f"| {ratio:.2f}x |" in report
    assert (run / "accuracy_throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_a_student_given_a_budget_is_searched_then_distilled(teacher_model, tmp_path):
    """`students.NAME.prune.target`: importance computes the windows of every candidate the search scores, the
    prune stage searches the shape and writes the winner, distillation and the report go on as for any student."""
    from minitron.models.checkpoint import open_model

    teacher = open_model(teacher_model).arch
    budget = int(0.6 * teacher.non_embedding_params)
    search = {"hidden_size_divisor": 12, "ffn_hidden_size_divisor": 32, "num_layers_divisor": 1,
              "max_width_pruning": 0.5, "max_depth_pruning": 0.5, "top_n": 3}  # fmt: skip
    conf = tiny_recipe(tmp_path / "conf", teacher_model, steps=2,
                       teacher_correction={"enabled": False, "args": []},
                       students={"searched": {"prune": {"target": {"non_embedding_params": budget}, "search": search}}})  # fmt: skip
    run = tmp_path / "run"
    result = run_cli(*pipeline_args(conf, run), timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    stages = manifest(run)
    pruned = stages["prune_searched"]["result"]
    table = json.loads((run / "students" / "searched" / "pruned" / "search" / "candidates.json").read_text())
    scored = [row for row in table["candidates"] if row.get("loss_b") is not None]
    assert len(scored) == 3 and sum(row["chosen"] for row in scored) == 1
    chosen = min(scored, key=lambda row: row["loss_b"])
    assert chosen["chosen"] and 0.95 * budget <= chosen["non_embedding_params"] <= budget
    built = open_model(run / "students" / "searched" / "pruned").arch
    assert (built.num_layers, built.hidden_size, built.ffn_hidden_size) == (
        chosen["num_layers"], chosen["hidden_size"], chosen["ffn_hidden_size"])
    assert built.non_embedding_params == chosen["non_embedding_params"]
    # the importance stage estimated the window losses of every depth among the scored candidates
    depths = sorted({teacher.num_layers - row["num_layers"] for row in scored} - {0})
    importance = " ".join(stages["importance"]["args"])
    assert (f"importance.window_sizes={json.dumps(depths, separators=(',', ':'))}" in importance) == bool(depths)
    assert pruned is not None and stages["distill_searched"]["result"]["steps"] == 2
    report = (run / "report.md").read_text()
    assert "## Architecture search: searched, pruned" in report and "| name | num_layers |" in report
    assert "](students/searched/pruned/search/loss_vs_params.png)" in report


@pytest.mark.slow
def test_alignment_stages_after_distillation(teacher_model, tmp_path):
    """students.NAME.align: SFT then DPO in 2 rounds from the distilled student; the aligned model is a row of the
    report, with its held-out reward accuracy; the teacher and the aligned student answer the fixed prompts."""
    import shutil

    from align.align_helpers import CHATML, preference_rows, sft_rows, write_jsonl

    teacher = shutil.copytree(teacher_model, tmp_path / "teacher")  # the tiny teacher, with a chat template
    config = json.loads((teacher / "tokenizer_config.json").read_text())
    (teacher / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": CHATML}))
    data = tmp_path / "align"
    data.mkdir()
    steps = ["train.steps=2", "train.global_batch_size=2", "train.micro_batch_size=2", "train.lr=1e-3",
             "logging.progress=false"]  # fmt: skip
    align = {"sft": [{"data": str(write_jsonl(data / "chat.jsonl", sft_rows(8))), "args": steps}],
             "dpo": {"data": str(write_jsonl(data / "pairs.jsonl", preference_rows(8))), "args": [*steps, "align.rounds=2"]},
             "seq_length": 96}  # fmt: skip
    conf = tiny_recipe(tmp_path / "conf", teacher, steps=2, teacher_correction={"enabled": False, "args": []},
                       students={"width": {"prune": {"hidden_size": 48, "ffn_hidden_size": 128}, "align": align}},
                       alignment={"heldout_pairs": str(write_jsonl(data / "heldout.jsonl", preference_rows(6))),
                                  "prompts": ["say hi", "name a colour"], "max_new_tokens": 4,
                                  "args": ["rewards.micro_batch_size=2"]})  # fmt: skip
    run = tmp_path / "run"
    result = run_cli(*pipeline_args(conf, run), timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    stages = manifest(run)
    names = list(stages)
    assert names.index("distill_width") < names.index("sft_width") < names.index("dpo_width") < names.index(
        "eval_width_aligned") < names.index("rewards_width") < names.index("answers_width_aligned")
    assert stages["dpo_width"]["result"]["final"] == str(run / "students" / "width" / "dpo" / "round-2" / "final")
    assert f"model.path={run / 'students' / 'width' / 'sft' / 'final'}" in stages["dpo_width"]["args"]
    summary = json.loads((run / "summary.json").read_text())
    rows = {row["name"]: row for row in summary["models"]}
    aligned = rows["width, aligned"]
    assert aligned["role"] == "aligned" and aligned["heldout_loss"] is not None
    assert aligned["path"] == str(run / "students" / "width" / "dpo" / "round-2" / "final")
    assert aligned["rewards"] == stages["rewards_width"]["result"] and aligned["rewards"]["pairs"] == 6
    assert f"reference.path={run / 'students' / 'width' / 'sft' / 'final'}" in stages["rewards_width"]["args"]
    answers = {entry["name"]: entry["answers"] for entry in summary["answers"]}
    assert set(answers) == {"teacher", "width, aligned"}
    assert [a["prompt"] for a in answers["teacher"]] == ["say hi", "name a colour"]
    report = (run / "report.md").read_text()
    accuracy = f"{100 * aligned['rewards']['rewards/accuracies']:.1f}"
    assert "## Alignment" in report and f"| width, aligned | 6 | {accuracy} |" in report
    assert "**say hi**" in report and "- *width, aligned*: " in report
