"""Teacher + student for the training loop: the frozen teacher runs beside the student in every micro-batch.

Both models are ``GPTModel`` shards in the same TP x PP layout and dtype. The student is trained by the
ordinary loop (:func:`minitron.training.loop.train`: its DDP wrapper, optimizer, checkpoints); the
teacher has no gradients, no optimizer state, stays in eval mode and is never checkpointed. Per
micro-batch (:meth:`DistillationModel.forward_step`, Megatron's ``forward_step_func``), on each
pipeline stage::

    first stage      teacher(tokens) [no grad] and student(tokens)
    other stages     the received [s, b, h_student + h_teacher] is split; each model continues from its part
    not last stage   send cat([student_hidden, teacher_hidden], dim=-1): the P2P shapes are widened by
                     h_teacher (:meth:`adjust_tensor_shapes`); the teacher's part carries no gradient
    last stage       logits [b, s, vocab/tp] of both -> per-token losses (minitron.distill.losses), masked
                     and summed like the cross-entropy of `minitron train`

The schedule hands each stage its received tensor through the student's ``set_input_tensor``; the
wrapper takes that call over (an attribute on the student shard) and routes the two halves.

Hidden-state losses read layer outputs with forward hooks; their layers must be on the last stage. When
the hidden sizes differ, the learned projection lives on the student shard as ``distill_projection`` so
that DDP, the optimizer and training checkpoints include it (a resume is exact); the final student
(OUTPUT/final) is written without it.
"""

from __future__ import annotations

import contextlib
from functools import partial

import torch

from minitron.config.distill import DistillSettings
from minitron.distill import losses, vocab_parallel
from minitron.distill.checks import normalized_pairs
from minitron.errors import MinitronError
from minitron.training.step import StepFunctions

PROJECTION = "distill_projection"


class DistillationModel:
    """A frozen ``teacher`` shard beside a trainable ``student`` shard (bare ``GPTModel``s, same layout)."""

    def __init__(self, student, teacher, settings: DistillSettings, seed: int):
        self.student, self.teacher, self.settings = student, teacher, settings
        teacher.eval()
        teacher.requires_grad_(False)
        self.student_hidden = student.config.hidden_size
        self.teacher_hidden = teacher.config.hidden_size
        self.pipeline_parallel = student.config.pipeline_model_parallel_size > 1
        self.group = vocab_parallel.tp_group()
        self.pairs = normalized_pairs(settings.hidden_pairs, student.config.num_layers, teacher.config.num_layers)
        self.projection = None
        self._received = None
        self._captured = {"student": {}, "teacher": {}}
        self._hooks = []
        if self.pairs and student.post_process:
            self._hook_layers(student, "student", {s for s, _ in self.pairs})
            self._hook_layers(teacher, "teacher", {t for _, t in self.pairs})
            if self.student_hidden != self.teacher_hidden:
                parameter = next(student.parameters())
                self.projection = losses.make_projection(self.student_hidden, self.teacher_hidden, seed,
                                                         parameter.dtype, parameter.device)  # fmt: skip
                student.add_module(PROJECTION, self.projection)
        student.set_input_tensor = self._receive  # the schedule's P2P input now comes here (see module doc)

    # ---- wiring ------------------------------------------------------------------------------------

    def _hook_layers(self, model, role: str, layers: set) -> None:
        found = set()
        for layer in model.decoder.layers:
            index = layer.layer_number - 1  # global, 0-based
            if index in layers:
                found.add(index)
                self._hooks.append(layer.register_forward_hook(partial(self._capture, role, index)))
        if found != layers:
            raise MinitronError(
                f"distill.hidden_pairs: {role} layers {sorted(layers - found)} are not on the last pipeline stage"
            )

    def _capture(self, role: str, index: int, module, inputs, output) -> None:
        self._captured[role][index] = output[0] if isinstance(output, tuple) else output

    def _receive(self, input_tensor) -> None:
        self._received = input_tensor[0] if isinstance(input_tensor, list) else input_tensor

    def close(self) -> None:
        """Undo the wiring: hooks removed, the student's own ``set_input_tensor`` back."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self.student.__dict__.pop("set_input_tensor", None)

    # ---- what the schedule runs ---------------------------------------------------------------------

    def step_functions(self) -> StepFunctions:
        """The loop's per-micro-batch functions for distillation."""
        keys = ("loss", "kd") + (("hidden",) if self.pairs else ()) + (("lm",) if self.settings.lm_loss_weight else ())
        shapes = self.adjust_tensor_shapes if self.pipeline_parallel else None
        return StepFunctions(forward_step=self.forward_step, adjust_tensor_shapes=shapes, report_keys=keys)

    def adjust_tensor_shapes(self, recv_shapes: list, send_shapes: list) -> tuple[list, list]:
        """P2P shapes ``[s, b, h_student]`` widened to ``[s, b, h_student + h_teacher]``."""

        def widen(shapes):
            return [(*shape[:-1], self.student_hidden + self.teacher_hidden) for shape in shapes]

        return widen(recv_shapes), widen(send_shapes)

    def forward_step(self, data_iterator, model):
        """Megatron ``forward_step_func``: teacher and student on one micro-batch; ``model`` is the wrapped student."""
        batch = next(data_iterator)
        device = next(model.parameters()).device
        tokens = batch["tokens"].to(device, non_blocking=True)
        position_ids = batch["position_ids"].to(device, non_blocking=True)
        student_input = teacher_input = None
        received, self._received = self._received, None
        if received is not None:
            student_input, teacher_input = received.split([self.student_hidden, self.teacher_hidden], dim=-1)
            student_input, teacher_input = student_input.contiguous(), teacher_input.contiguous()
        type(self.student).set_input_tensor(self.student, student_input)
        self.teacher.set_input_tensor(teacher_input)
        self._captured = {"student": {}, "teacher": {}}
        with torch.no_grad():
            teacher_output = self.teacher(tokens, position_ids, None)
        student_output = model(tokens, position_ids, None)
        if not self.student.post_process:  # hidden states [s, b, h] of both go to the next stage
            return torch.cat([student_output, teacher_output.to(student_output.dtype)], dim=-1), None
        captured, self._captured = self._captured, {"student": {}, "teacher": {}}
        return student_output, partial(self._loss, batch, teacher_output, captured)

    def _loss(self, batch: dict, teacher_logits: torch.Tensor, captured: dict, student_logits: torch.Tensor):
        """Loss function of the last stage: (masked loss sum, token count, reports of [sum, tokens])."""
        settings = self.settings
        lm = None
        if settings.lm_loss_weight:  # before the KL, which overwrites the student's logits with their gradient
            lm = vocab_parallel.cross_entropy(student_logits, batch["labels"], self.group)
        kd = losses.logit_loss(settings.loss, student_logits, teacher_logits, settings.temperature, settings.topk,
                               self.group, inplace=True)  # fmt: skip
        hidden = []
        for student_layer, teacher_layer in self.pairs:
            student_hidden = captured["student"][student_layer]
            if self.projection is not None:
                student_hidden = self.projection(student_hidden)
            per_token = losses.hidden_loss(settings.hidden_loss, student_hidden, captured["teacher"][teacher_layer])
            hidden.append(per_token.transpose(0, 1))  # [s, b] -> [b, s], as the loss mask
        total, parts = losses.combine(batch["loss_mask"], kd, hidden, lm, settings.lm_loss_weight)
        count = batch["loss_mask"].to(total.device, torch.float32).sum()
        reports = {"loss": torch.stack([total.detach(), count])}
        reports.update({name: torch.stack([value, count]) for name, value in parts.items()})
        return total, count.to(torch.int), reports

    # ---- the final student --------------------------------------------------------------------------

    @contextlib.contextmanager
    def student_only(self):
        """The student shard without distillation's training-only modules (the projection), for export."""
        removed = self.student._modules.pop(PROJECTION, None)
        try:
            yield self.student
        finally:
            if removed is not None:
                self.student.add_module(PROJECTION, removed)

    def export_final(self, parts, source, run_dir, step: int, trained_tokens=None):
        """The loop's ``export``: OUTPUT/final holds the student alone (`minitron convert` exports it)."""
        from minitron.training import loop

        with self.student_only():
            return loop.export_final(parts, source, run_dir, step, trained_tokens)


def load_distillation(student_source, teacher_source, tp: int, pp: int, dtype: torch.dtype,
                      settings: DistillSettings, seed: int, scale=None) -> DistillationModel:  # fmt: skip
    """Build and load both shards in this rank's layout and ``dtype``, wired for distillation; both get the
    run's :class:`~minitron.parallel.scale.ScaleLayout` ``scale`` (the teacher without recomputation)."""
    from minitron.models.checkpoint import load_model
    from minitron.parallel.scale import without_recompute

    student = load_model(student_source, tp, pp, dtype, scale)
    teacher = load_model(teacher_source, tp, pp, dtype, None if scale is None else without_recompute(scale))
    return DistillationModel(student, teacher, settings, seed)
