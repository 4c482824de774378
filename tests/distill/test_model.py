"""Teacher + student in one process (TP=1, PP=1): the teacher stays frozen and out of checkpoints, a student
learns the teacher's distribution, and a teacher distilled into itself has nothing to learn."""

from distill_helpers import losses, records, student_model, teacher_model  # noqa: F401 (fixtures)
from workers.distill import build, make_config, run_distill
from workers.train import corpus


def heldout_kl(distill, parts, cfg) -> float:
    """Mean KL(teacher || student) per token over the held-out corpus (forward only)."""
    from minitron.training.data import micro_batches
    from minitron.training.step import evaluate

    heldout = corpus(16, seed=5)
    batches = micro_batches(heldout, 4, 1, 0)
    loss, tokens = evaluate(parts.model, batches, 4, 4, 32, 1, functions=distill.step_functions())
    assert tokens == 16 * 32
    return loss


def test_teacher_into_itself_has_zero_loss_and_gradient(teacher_model, tmp_path, megatron_world):
    run = tmp_path / "run"
    run_distill(str(teacher_model), str(teacher_model), str(run), steps=2)
    for record in records(run):
        assert abs(record["loss"]) < 1e-6 and record["kd"] == record["loss"], record
        assert record["grad_norm"] < 1e-5, record


def test_distillation_lowers_heldout_kl(student_model, teacher_model, tmp_path, megatron_world):
    from minitron.training import loop, rundir
    from minitron.training.data import TrainData

    run = tmp_path / "run"
    cfg = make_config(str(student_model), str(teacher_model), str(run), steps=30, lr=3e-3)
    distill, parts, source = build(cfg)
    try:
        # the teacher is frozen: no gradient, no optimizer state, eval mode, not in the student's checkpoint
        assert not any(p.requires_grad for p in distill.teacher.parameters()) and not distill.teacher.training
        optimized = {id(p) for group in parts.optimizer.param_groups for p in group["params"]}
        assert optimized and not optimized & {id(p) for p in distill.teacher.parameters()}
        before = heldout_kl(distill, parts, cfg)
        rundir.prepare(run, "distill test\n")
        loop.train(parts, TrainData(train=corpus(256, seed=0)), cfg, run, source,
                   functions=distill.step_functions(), export=distill.export_final)  # fmt: skip
        after = heldout_kl(distill, parts, cfg)
    finally:
        distill.close()
    assert after < 0.6 * before, (before, after)
    train = losses(run)
    assert len(train) == 30 and sum(train[-3:]) / 3 < 0.7 * train[0]
    assert (run / "final" / "minitron.json").is_file()


def test_hidden_pairs_with_projection(student_model, teacher_model, tmp_path, megatron_world):
    """Student hidden 64, teacher 96: the learned projection trains and checkpoints with the student, and
    OUTPUT/final holds the student alone."""
    from torch.distributed.checkpoint import FileSystemReader

    run = tmp_path / "run"
    settings = {"hidden_pairs": [[1, -1], [0, 1]], "hidden_loss": "mse", "lm_loss_weight": 0.5}
    result = run_distill(str(student_model), str(teacher_model), str(run), steps=2, interval=2, distill=settings)
    first = records(run)[0]
    assert first["hidden"] > 0 and first["lm"] > 4.0
    # total = kd + (hidden rescaled to kd) + 0.5 x lm
    assert abs(first["loss"] - (2 * first["kd"] + 0.5 * first["lm"])) < 1e-5, first

    def keys(path):
        return set(FileSystemReader(str(path)).read_metadata().state_dict_metadata)

    assert "distill_projection.weight" in keys(run / "checkpoints" / "iter_0000002")
    assert not any("distill" in key for key in keys(run / "final" / "dist")) and result["steps"] == 2
    # the wrapper is undone: the student shard takes the schedule's input itself again
    cfg = make_config(str(student_model), str(teacher_model), str(tmp_path / "other"), distill=settings)
    distill, _, _ = build(cfg)
    assert "set_input_tensor" in distill.student.__dict__
    distill.close()
    assert "set_input_tensor" not in distill.student.__dict__
    assert not any(layer._forward_hooks for layer in distill.teacher.decoder.layers)
