"""Model checkpoints: Hugging Face directories and minitron's Megatron checkpoints, both ways.

A **Hugging Face directory** holds ``config.json``, ``model.safetensors`` (or shards plus
``model.safetensors.index.json``) and tokenizer files; one that minitron wrote also ``minitron.json``
(what it was made from, and the software versions that made it).

A **Megatron checkpoint** (what ``minitron convert`` writes) is a directory::

    minitron.json   format marker, architecture, dtype, the HF config.json it came from, provenance
    hf_files/       tokenizer and generation files carried from the HF directory
    dist/           Megatron-Core dist checkpoint (torch_dist): reshards to any TP/PP on load

Import streams the HF tensors one at a time into this rank's shard; export gathers one parameter at
a time over its TP group and appends it to a streaming safetensors writer, one file per pipeline
stage. Peak memory beyond the model shard is about one full tensor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Optional

import torch

from minitron.errors import MinitronError
from minitron.fsutil import replace_directory
from minitron.models import hf_weights
from minitron.models.arch import ModelArch, arch_from_hf_config, hf_config_from_arch, read_hf_config
from minitron.models.safetensors_io import SafetensorsReader, StreamingSafetensorsWriter
from minitron.runtime import versions

FORMAT = "minitron-megatron-checkpoint"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5", ".png")
IDENTITY_SUFFIXES = (".safetensors", ".bin", ".gguf")  # an HF directory's files that same_for_copies counts
NOT_CARRIED = {"config.json", "model.safetensors.index.json", "minitron.json", "importance.json", "prune_summary.json"}


@dataclasses.dataclass
class ModelSource:
    """A model on disk, of either kind, with what is needed to build and describe it."""

    path: Path
    kind: str  # "hf" | "megatron"
    arch: ModelArch
    hf_config: dict  # the Hugging Face config.json of the model
    dtype: torch.dtype  # dtype the weights are stored in
    carried_files: Path  # directory holding tokenizer/generation files
    init: str = "pretrained"  # pretrained: the weights at path | random: path's architecture, fresh weights

    def fingerprint(self, same_for_copies: bool = False, settings: Optional[dict] = None) -> str:
        """16 hex digits identifying the model: its HF config and its files' names, sizes and mtimes.

        ``same_for_copies``: only the weight files' names and sizes count (an HF directory's other files
        and every mtime are left out), so a copy of the model has the same fingerprint. ``settings``:
        whatever else an output made from the model depends on (JSON-able), hashed in as well."""
        digest = hashlib.sha256(json.dumps(self.hf_config, sort_keys=True).encode())
        root = self.path if self.kind == "hf" else self.path / "dist"
        for file in sorted(root.rglob("*")):
            if not file.is_file() or (same_for_copies and self.kind == "hf" and file.suffix not in IDENTITY_SUFFIXES):
                continue
            stat = file.stat()
            name = f"{file.relative_to(root)}:{stat.st_size}"
            digest.update((name if same_for_copies else f"{name}:{stat.st_mtime_ns}").encode())
        if settings is not None:
            digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
        return digest.hexdigest()[:16]

    def build_dtype(self, requested: str, for_compute: bool) -> torch.dtype:
        """The dtype to build the model in: ``requested`` (``model.dtype``: one of
        :data:`~minitron.config.common.DTYPE_NAMES`, or ``auto``), else the stored dtype (``for_compute=False``)
        or the device's compute dtype (bfloat16 on GPU, float32 on CPU)."""
        if requested != "auto":
            return getattr(torch, requested)
        if not for_compute:
            return self.dtype
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32


def is_megatron_checkpoint(path: Path) -> bool:
    return (Path(path) / "minitron.json").is_file() and (Path(path) / "dist").is_dir()


def open_model(path, init: str = "pretrained") -> ModelSource:
    """Describe the model at ``path`` (an HF directory or a minitron Megatron checkpoint).

    ``init="random"``: the model is ``path``'s architecture, tokenizer and HF config with freshly
    initialised weights; :func:`load_model` then reads no weights."""
    path = Path(path)
    if not path.exists():
        raise MinitronError(f"model.path={path}: no such file or directory")
    if is_megatron_checkpoint(path):
        try:
            meta = json.loads((path / "minitron.json").read_text())
        except json.JSONDecodeError:
            raise MinitronError(f"{path / 'minitron.json'}: malformed JSON; the checkpoint is corrupt") from None
        if meta.get("format") != FORMAT:
            raise MinitronError(f"{path}: not a minitron Megatron checkpoint (format={meta.get('format')!r})")
        return ModelSource(
            path=path,
            kind="megatron",
            arch=arch_from_hf_config(meta["hf_config"]),
            hf_config=meta["hf_config"],
            dtype=getattr(torch, meta["dtype"]),
            carried_files=path / "hf_files",
            init=init,
        )
    config = read_hf_config(path)
    arch = arch_from_hf_config(config)
    dtype = SafetensorsReader(path).dtype()
    return ModelSource(path=path, kind="hf", arch=arch, hf_config=config, dtype=dtype, carried_files=path, init=init)


CARRIED_META = ("trained_tokens",)  # minitron.json facts about the weights that a conversion keeps


def carried_meta(source: ModelSource) -> dict:
    """The fields of ``source``'s minitron.json that describe its weights (kept by `minitron convert`)."""
    try:
        meta = json.loads((source.path / "minitron.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return {key: meta[key] for key in CARRIED_META if isinstance(meta, dict) and key in meta}


def describe(source: ModelSource) -> dict:
    """What a result names a model by: path, kind, parameter counts, and the tokens it was trained on when
    its ``minitron.json`` records them (a training run's final checkpoint; 0 for a freshly pruned student)."""
    return {"path": str(source.path), "kind": source.kind, "params": source.arch.params,
            "non_embedding_params": source.arch.non_embedding_params,
            "trained_tokens": carried_meta(source).get("trained_tokens")}  # fmt: skip


# ---- loading weights into a model shard --------------------------------------------------------


def load_hf_weights(model, source: ModelSource) -> None:
    """Copy the HF tensors of ``source`` into this rank's ``GPTModel`` shard, one tensor at a time."""
    load_hf_tensors(model, source.arch, SafetensorsReader(source.path).get, str(source.path))


def load_hf_tensors(model, arch: ModelArch, get_tensor, where: str) -> None:
    """Copy full HF-named tensors (``get_tensor(hf_name)``, e.g. read from a file or held in memory) of a model of
    ``arch`` into this rank's ``GPTModel`` shard; ``where`` names their origin in errors."""
    from megatron.core import parallel_state

    tp, tp_rank = parallel_state.get_tensor_model_parallel_world_size(), parallel_state.get_tensor_model_parallel_rank()
    for name, param in model.named_parameters():
        mapping = hf_weights.parameter_mapping(model, arch, name)
        full = mapping.to_megatron([get_tensor(hf_name) for hf_name in mapping.hf_names])
        expected = hf_weights.full_shape(name, param, tp)
        if tuple(full.shape) != expected:
            raise MinitronError(
                f"{where}: tensor(s) {', '.join(mapping.hf_names)} have shape {tuple(full.shape)} "
                f"but config.json implies {expected} for {name}"
            )
        with torch.no_grad():
            param.copy_(hf_weights.shard(name, param, full, tp_rank, tp))


def _init_method(model, arch: ModelArch, name: str):
    """Megatron's initialiser (from the model's config) of parameter ``name``; None for norms (1) and biases (0)."""
    config = model.config
    if name.endswith(("layernorm.weight", "layer_norm_weight", ".bias")):
        return None
    if name == "embedding.word_embeddings.weight" or (name == "output_layer.weight" and arch.tie_word_embeddings):
        return config.embedding_init_method
    if name.endswith(("self_attention.linear_proj.weight", "mlp.linear_fc2.weight")):
        return config.output_layer_init_method
    return config.init_method


def init_random_weights(model, source: ModelSource, seed: int) -> None:
    """Megatron's initialisation of this rank's shard, the same in every TP x PP layout.

    Megatron draws each shard from its process's RNG stream, so the weights depend on the layout (each pipeline
    stage starts from the same state; on GPU each TP rank draws its own shard). Here each full (TP=1) parameter
    is drawn on CPU in fp32 by the config's initialiser (``embedding_init_method`` for the embedding and a tied
    LM head, ``output_layer_init_method`` for ``linear_proj``/``linear_fc2``, ``init_method`` for the other
    matrices; norms 1, biases 0), from a generator seeded by ``seed`` and the parameter's Hugging Face name(s)
    (global layer numbers), then sharded like a loaded tensor: any TP/PP gives exactly the TP=1, PP=1 weights.
    Peak memory beyond the shard: one full tensor.
    """
    from megatron.core import parallel_state

    tp, tp_rank = parallel_state.get_tensor_model_parallel_world_size(), parallel_state.get_tensor_model_parallel_rank()
    for name, param in model.named_parameters():
        key = ",".join(hf_weights.parameter_mapping(model, source.arch, name).hf_names)  # the layout-free name
        method = _init_method(model, source.arch, name)
        full = torch.empty(hf_weights.full_shape(name, param, tp), dtype=torch.float32)
        if method is None:
            full.fill_(0.0 if name.endswith(".bias") else 1.0)
        else:
            digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
            with torch.random.fork_rng(devices=[]):  # the process's RNG state is left as it was
                torch.manual_seed(int.from_bytes(digest[:8], "little") >> 1)
                method(full)
        with torch.no_grad():
            param.copy_(hf_weights.shard(name, param, full, tp_rank, tp))


def load_megatron_weights(model, source: ModelSource) -> None:
    """Load a minitron Megatron checkpoint into this rank's shard (any TP/PP: it reshards)."""
    from megatron.core import dist_checkpointing

    try:
        state = dist_checkpointing.load(model.sharded_state_dict(), str(source.path / "dist"))
        model.load_state_dict(state, strict=False)
    except (MinitronError, KeyboardInterrupt, SystemExit):
        raise
    except BaseException as err:  # torch's CheckpointException derives from BaseException
        cause = err
        failures = getattr(err, "failures", None)  # CheckpointException: {rank: exception or (exception, tb)}
        if failures:
            cause = next(iter(failures.values()))
            cause = cause[0] if isinstance(cause, tuple) else cause
        detail = f"{type(cause).__name__}: {cause}".strip().rstrip(":").splitlines()[0][:200]
        raise MinitronError(
            f"{source.path}: cannot load the Megatron checkpoint, it is corrupt or incomplete ({detail}); "
            "re-create it with `minitron convert`"
        ) from None


def load_model(source: ModelSource, tp: int, pp: int, dtype: Optional[torch.dtype] = None, scale=None):
    """Build this rank's ``GPTModel`` shard for ``source`` and load its weights (``scale``: a training run's
    resolved :class:`~minitron.parallel.scale.ScaleLayout`, None for inference).

    A ``source`` opened with ``init="random"`` gets Megatron's initialisation (normal(0, 0.02), output
    projections scaled by 1/sqrt(2 * num_layers), norms 1) seeded by the seed torch was last seeded with
    (:func:`minitron.parallel.setup_distributed`'s: ``train.seed``), the same at any TP/PP
    (:func:`init_random_weights`): no weights are read."""
    from minitron.models.megatron_gpt import build_gpt_model

    model = build_gpt_model(source.arch, tp, pp, dtype or source.dtype, scale=scale)
    if source.init == "random":
        init_random_weights(model, source, torch.initial_seed())
        return model
    if source.kind == "hf":
        load_hf_weights(model, source)
    else:
        load_megatron_weights(model, source)
    return model


# ---- output directories --------------------------------------------------------------------------


def _partial_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def begin_output(out: Path, fingerprint: str, overwrite: bool) -> Optional[Path]:
    """Claim ``out`` for writing; returns the staging directory, or None when ``out`` is up to date.

    Refuses an ``out`` that already holds something else (unless ``overwrite``); a stale staging
    directory of an interrupted run is removed. Call on every rank; only rank 0 touches the disk.
    """
    out = Path(out)
    existing = out / "minitron.json"
    if out.exists() and any(out.iterdir()):
        if existing.is_file():
            try:
                if json.loads(existing.read_text()).get("source_fingerprint") == fingerprint:
                    return None
            except json.JSONDecodeError:
                pass
        if not overwrite:
            raise MinitronError(
                f"output={out} already exists and holds a different model or other files; "
                "choose a new output directory (or pass overwrite=true to replace it)"
            )
    staging = _partial_dir(out)
    if _rank() == 0:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    _barrier()
    return staging


@contextlib.contextmanager
def staged(staging: Path):
    """Remove the staging directory when the writing inside the block fails (the output is untouched)."""
    try:
        yield staging
    except BaseException:
        if _rank() == 0:
            shutil.rmtree(staging, ignore_errors=True)
        raise


def finish_output(staging: Path, out: Path) -> None:
    """Atomically move the finished staging directory into place (rank 0 renames, all ranks wait)."""
    _barrier()
    if _rank() == 0:
        replace_directory(staging, out)
    _barrier()


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def _barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def copy_carried_files(src: Path, dst: Path) -> None:
    """Copy tokenizer/generation files (everything but weights and config) from ``src`` to ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    for file in Path(src).iterdir():
        if file.is_file() and file.name not in NOT_CARRIED and not file.name.endswith(WEIGHT_SUFFIXES):
            shutil.copy2(file, dst / file.name)


# ---- saving ------------------------------------------------------------------------------------


def save_megatron_checkpoint(model, source: ModelSource, staging: Path, fingerprint: str, hf_config: dict,
                             extra_meta: Optional[dict] = None) -> None:  # fmt: skip
    """Write ``model`` (every rank's shard) as a minitron Megatron checkpoint into ``staging``
    (``extra_meta``: more fields for its minitron.json, e.g. ``trained_tokens``)."""
    from megatron.core import dist_checkpointing

    if _rank() == 0:
        (staging / "dist").mkdir()
        copy_carried_files(source.carried_files, staging / "hf_files")
        meta = {
            "format": FORMAT,
            "version": 1,
            "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
            "hf_config": hf_config,
            "architecture": arch_from_hf_config(hf_config).to_dict(),
            "source": str(source.path),
            "source_fingerprint": fingerprint,
            "versions": versions(),
        }
        if source.init != "pretrained":  # e.g. trained from random init: source gave only the architecture
            meta["init"] = source.init
        meta.update(extra_meta or {})
        (staging / "minitron.json").write_text(json.dumps(meta, indent=2))
    _barrier()
    dist_checkpointing.save(model.sharded_state_dict(), str(staging / "dist"))


def export_hf(model, arch: ModelArch, base_config: dict, carried_files: Path, staging: Path, fingerprint: str,
              extra_meta: Optional[dict] = None) -> None:  # fmt: skip
    """Write ``model`` as a Hugging Face directory into ``staging`` (streaming, one file per PP stage;
    ``extra_meta``: more fields for its minitron.json)."""
    from megatron.core import parallel_state

    tp = parallel_state.get_tensor_model_parallel_world_size()
    pp = parallel_state.get_pipeline_model_parallel_world_size()
    stage = parallel_state.get_pipeline_model_parallel_rank()
    tp_group = parallel_state.get_tensor_model_parallel_group()
    writer_rank = parallel_state.get_tensor_model_parallel_rank() == 0 and parallel_state.get_data_parallel_rank() == 0

    params = hf_weights.exported_parameters(model, arch)
    mappings = [hf_weights.parameter_mapping(model, arch, name) for name, _ in params]
    specs = []
    for (name, param), mapping in zip(params, mappings):
        meta = torch.empty(hf_weights.full_shape(name, param, tp), device="meta")
        specs += [(hf_name, tuple(t.shape)) for hf_name, t in zip(mapping.hf_names, mapping.to_hf(meta))]
    file_name = "model.safetensors" if pp == 1 else f"model-{stage + 1:05d}-of-{pp:05d}.safetensors"
    dtype = next(model.parameters()).dtype
    writer = StreamingSafetensorsWriter(staging / file_name, specs, dtype) if writer_rank else None
    for (name, param), mapping in zip(params, mappings):
        if tp > 1 and getattr(param, "tensor_model_parallel", False):
            pieces = [torch.empty_like(param) for _ in range(tp)]
            torch.distributed.all_gather(pieces, param.detach().contiguous(), group=tp_group)
        else:
            pieces = [param.detach()]
        if writer:
            for hf_name, tensor in zip(mapping.hf_names, mapping.to_hf(hf_weights.unshard(name, param, pieces))):
                writer.write(hf_name, tensor)
    if writer:
        writer.close()

    names = [(hf_name, file_name) for hf_name, _ in specs] if writer_rank else []
    gathered = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, names)
    if _rank() == 0:
        if pp > 1:
            weight_map = dict(pair for part in gathered for pair in part)
            total = sum(f.stat().st_size for f in staging.glob("model-*.safetensors"))
            index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
            (staging / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        config = hf_config_from_arch(arch, base_config)
        config["dtype"] = str(dtype).replace("torch.", "")
        config.pop("torch_dtype", None)
        config.pop("quantization_config", None)
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        copy_carried_files(carried_files, staging)
        provenance = {"format": "hf-export", "source_fingerprint": fingerprint, "versions": versions(),
                      **(extra_meta or {})}  # fmt: skip
        (staging / "minitron.json").write_text(json.dumps(provenance, indent=2))
    _barrier()
