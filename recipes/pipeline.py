"""minitron pipeline: the whole Minitron recipe in one resumable command.

    minitron pipeline recipe=demo_smollm2                      # `make demo`: SmolLM2-135M on this CPU, ~30 min
    minitron pipeline recipe=NAME output=RUN [launcher="torchrun --nproc-per-node 8"] [recipe.budget.steps=N]
    minitron pipeline recipe=NAME dry_run=true                 # the stages, their commands and what is done

A recipe (conf/recipe/NAME.yaml, schema in minitron/config/pipeline.py) names a teacher, the data and
its students' pruning targets; the stages run in order: assets, data preparation, teacher correction
(optional), importance, pruning (one per student, from the same scores), distillation, from-scratch
baselines (optional), evaluation (held-out loss and KL to the teacher of every model), export to
Hugging Face, report. Each is the `minitron` command a user would type, run as a child process with
its output shown and kept in RUN/logs/. RUN/pipeline.json records what each stage did; running the
same command again skips finished stages and resumes the interrupted one. The report is RUN/report.md
(table, checks, RUN/loss_curves.png); the last stdout line is a JSON summary.
"""

from omegaconf import OmegaConf

from minitron import runtime
from minitron.config import schema
from minitron.pipeline.runner import run_pipeline


@runtime.recipe("pipeline")
def main(cfg) -> None:
    config = OmegaConf.to_container(cfg, resolve=True)
    cfg = schema.to_object(cfg)
    runtime.print_result(run_pipeline(cfg, config))


if __name__ == "__main__":
    main()
