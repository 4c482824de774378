"""The planner's figures against the engine: weights, gradients and optimizer state equal the tensors the engine
allocates; the activation estimate is within 20% of the tensors a training forward pass saves for the backward
(counted with ``torch.autograd.graph.saved_tensors_hooks``, each storage once, parameters left out)."""

import pytest
import torch

from train_helpers import train_model  # noqa: F401 (fixture)
from workers.train import corpus, make_config

from minitron.plan.memory import Layout, plan_memory

ACTIVATION_TOLERANCE = 0.20


def _engine(model_dir, recompute="none", distributed_optimizer=False):
    from minitron.models.checkpoint import load_model, open_model
    from minitron.parallel.scale import ScaleLayout
    from minitron.training.engine import build_training_parts

    cfg = make_config(str(model_dir), "unused", distributed_optimizer=distributed_optimizer)
    scale = ScaleLayout(recompute=recompute, recompute_method="uniform" if recompute == "full" else None,
                        recompute_num_layers=1 if recompute == "full" else None)  # fmt: skip
    source = open_model(str(model_dir))
    return source.arch, build_training_parts(load_model(source, 1, 1, torch.float32, scale), cfg.train, scale)


def _saved_bytes(parts, micro_batch_size, seq_length) -> int:
    """Bytes of the distinct non-parameter storages autograd saves in one training forward of a micro-batch."""
    params = {p.untyped_storage().data_ptr() for p in parts.model.parameters()}
    seen = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    samples = corpus(micro_batch_size, seed=0, seq_length=seq_length)
    tokens = torch.stack([s["tokens"] for s in samples])
    positions = torch.stack([s["position_ids"] for s in samples])
    parts.model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = parts.model(tokens, positions, None, labels=torch.stack([s["labels"] for s in samples]))
    loss.sum().backward()
    return sum(seen.values())


def test_weights_gradients_optimizer_equal_the_engines(train_model, megatron_world):
    arch, parts = _engine(train_model)
    plan = plan_memory(arch, Layout(dtype="float32", fused=False))["parts"]
    weights = sum(p.numel() * p.element_size() for p in parts.model.parameters())
    grads = sum(buffer.grad_data.numel() * buffer.grad_data.element_size() for buffer in parts.model.buffers)
    _saved_bytes(parts, 1, 16)
    parts.optimizer.step()
    states = [t for chained in parts.optimizer.chained_optimizers for state in chained.optimizer.state.values()
              for t in state.values() if torch.is_tensor(t) and t.dim() > 0]  # Adam's moments (not its step count)
    optimizer = sum(t.numel() * t.element_size() for t in states)
    assert (plan["weights"], plan["gradients"], plan["optimizer"]) == (weights, grads, optimizer)


@pytest.mark.parametrize("recompute", ["none", "selective", "full"])
def test_activations_within_tolerance_of_saved_tensors(train_model, megatron_world, recompute):
    arch, parts = _engine(train_model, recompute)
    micro_batch_size, seq_length = 2, 32
    measured = _saved_bytes(parts, micro_batch_size, seq_length)
    layout = Layout(dtype="float32", fused=False, micro_batch_size=micro_batch_size, global_batch_size=2,
                    seq_length=seq_length, recompute=recompute,
                    recompute_method="uniform" if recompute == "full" else None)  # fmt: skip
    plan = plan_memory(arch, layout)["parts"]
    # transients, not alive after the forward pass: the logits (the loss keeps its softmax) and, with full
    # recomputation, the saves of the one layer being recomputed
    transient = micro_batch_size * seq_length * arch.vocab_size * 4
    if recompute == "full":
        from minitron.plan.memory import layer_saved_elements

        transient += layer_saved_elements(arch, Layout(fused=False)) * micro_batch_size * seq_length * 4
    estimate = plan["activations"] - transient + plan["logits_loss"]
    assert abs(estimate - measured) <= ACTIVATION_TOLERANCE * measured, (recompute, estimate, measured)


def test_recomputation_lowers_saved_activations(train_model, megatron_world):
    measured = {recompute: _saved_bytes(_engine(train_model, recompute)[1], 2, 32) for recompute in ("none", "full")}
    assert measured["full"] < 0.5 * measured["none"], measured
