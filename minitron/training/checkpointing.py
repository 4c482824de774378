"""Training checkpoints: Megatron-Core dist checkpoints, written atomically and verified before a resume.

``OUTPUT/checkpoints/`` holds::

    iter_0000100/           a complete checkpoint, after 100 steps: Megatron's torch_dist files
                            (.metadata, common.pt, __<rank>_0.distcp, metadata.json) and, written last,
                            minitron_manifest.json (step, layout, every file's size and CRC32)
    iter_0000200.partial/   being written, or left by a killed run (removed at the next start)
    iter_0000150.corrupt/   refused at a resume (kept for inspection, never used again)
    latest                  name of the newest complete checkpoint, replaced after the rename

Saving: all ranks write their shards into ``iter_N.partial``; the files are checksummed and fsynced
(split over ranks); rank 0 writes the manifest, renames the directory to ``iter_N``, replaces
``latest`` and deletes checkpoints beyond ``keep_last``. A crash at any moment leaves the earlier
checkpoints intact. Resuming takes the newest ``iter_N`` whose files match its manifest; a newest one
that does not is refused with a warning, moved aside, and the one before it is used.

Contents: ``model`` (the GPTModel's sharded state), ``optimizer`` (Megatron's sharded optimizer state;
the distributed optimizer's in the ``fully_reshardable`` format), ``rng_state`` (one entry per rank),
and a common part from rank 0: step, consumed samples, scheduler state, layout, architecture. Model and
optimizer reshard on load, so a run saved at TP=2 resumes at TP=1, PP=2 or another DP size.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import zlib
from pathlib import Path
from typing import Optional

import torch

from minitron import runtime
from minitron.errors import MinitronError
from minitron.fsutil import fsync_directory, write_json_atomic, write_text_atomic
from minitron.training import rng

MANIFEST = "minitron_manifest.json"
LATEST = "latest"
_NAME = re.compile(r"^iter_(\d{7,})$")
_OPTIMIZER_METADATA = {"distrib_optim_sharding_type": "fully_reshardable"}


def checkpoints_dir(run_dir) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_name(step: int) -> str:
    return f"iter_{step:07d}"


def complete_checkpoints(run_dir) -> list[tuple[int, Path]]:
    """``(step, path)`` of every complete (renamed) checkpoint, oldest first."""
    root = checkpoints_dir(run_dir)
    found = []
    if root.is_dir():
        for path in root.iterdir():
            match = _NAME.match(path.name)
            if match and path.is_dir():
                found.append((int(match.group(1)), path))
    return sorted(found)


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def _world_size() -> int:
    return torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1


def _barrier() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def _all_gather(obj) -> list:
    if not torch.distributed.is_initialized():
        return [obj]
    gathered = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def layout(parts) -> dict:
    from megatron.core import parallel_state

    return {
        "tp": parallel_state.get_tensor_model_parallel_world_size(),
        "pp": parallel_state.get_pipeline_model_parallel_world_size(),
        "dp": parallel_state.get_data_parallel_world_size(),
        "world_size": _world_size(),
        "distributed_optimizer": parts.distributed_optimizer,
    }


# ---- file digests, split over ranks ---------------------------------------------------------------


def _digest(path: Path, mode: str, sync: bool) -> dict:
    """Size (and CRC32 in ``checksum`` mode) of one file; ``sync`` also fsyncs it to disk."""
    crc = 0
    with open(path, "rb") as f:
        if mode == "checksum":
            while chunk := f.read(1 << 22):
                crc = zlib.crc32(chunk, crc)
        if sync:
            os.fsync(f.fileno())
    entry = {"size": path.stat().st_size}
    if mode == "checksum":
        entry["crc32"] = f"{crc:08x}"
    return entry


def _data_files(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)


def _digests(directory: Path, names: list[str], mode: str, sync: bool) -> dict:
    """Digest of every file in ``names``, each rank taking every world_size-th one; all ranks get all."""
    mine = {}
    for name in names[_rank() :: _world_size()]:
        path = directory / name
        mine[name] = _digest(path, mode, sync) if path.is_file() else None
    merged = {}
    for part in _all_gather(mine):
        merged.update(part)
    return merged


# ---- saving ----------------------------------------------------------------------------------------


def use_in_process_write_queue() -> None:
    """Let Megatron's checkpoint writer report through an in-process queue instead of a Manager process.

    Megatron's torch_dist writer creates, at the first save, ``multiprocessing.get_context("spawn")
    .Manager().Queue()`` so that *asynchronous* saves running in another process can report back.
    minitron saves synchronously: the results are put and taken in this process, so a ``queue.Queue``
    does the same job without the Manager server process, which costs ~2 s at the first save,
    re-imports ``__main__`` (a script without a main guard deadlocks), and outlives a SIGKILLed
    training process while holding its stdout/stderr. No-op when Megatron has already made its queue
    or no longer has this global.
    """
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if getattr(filesystem_async, "_results_queue", "gone") is None:
        filesystem_async._results_queue = queue.Queue()


def _sharded_state_dict(parts, is_loading: bool, with_rng: bool, common: Optional[dict] = None) -> dict:
    model_state = parts.module.sharded_state_dict()  # the bare GPTModel: DDP would prefix "module."
    metadata = _OPTIMIZER_METADATA if parts.distributed_optimizer else None
    state = {
        "model": model_state,
        "optimizer": parts.optimizer.sharded_state_dict(model_state, is_loading=is_loading, metadata=metadata),
    }
    if with_rng:
        state["rng_state"] = rng.sharded(_rank(), _world_size())
    state.update(common or {})
    return state


def save(parts, run_dir, step: int, consumed_samples: int, arch: dict, keep_last: int, verify: str) -> Path:
    """Write the training state after ``step`` steps as ``checkpoints/iter_<step>``; returns its path."""
    from megatron.core import dist_checkpointing

    use_in_process_write_queue()
    root = checkpoints_dir(run_dir)
    final = root / checkpoint_name(step)
    partial = root / (final.name + ".partial")
    try:  # from the first byte on: an interruption anywhere leaves no half-written checkpoint
        if _rank() == 0:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        _barrier()
        return _save(parts, root, final, partial, step, consumed_samples, arch, keep_last, verify)
    except BaseException:  # a full disk, Ctrl-C, SIGTERM: no half-written checkpoint stays (the last good one does)
        if _rank() == 0:
            shutil.rmtree(partial, ignore_errors=True)
        raise


def _save(parts, root: Path, final: Path, partial: Path, step: int, consumed_samples: int, arch: dict,
          keep_last: int, verify: str) -> Path:  # fmt: skip
    from megatron.core import dist_checkpointing

    common = {
        "step": step,
        "consumed_samples": consumed_samples,
        "scheduler": parts.scheduler.state_dict(),
        "layout": layout(parts),
        "arch": arch,
    }
    dist_checkpointing.save(_sharded_state_dict(parts, False, True, common), str(partial))
    _barrier()
    names = _all_gather(_data_files(partial) if _rank() == 0 else None)[0]  # one listing for all ranks
    files = _digests(partial, names, verify, sync=True)
    if _rank() == 0:
        manifest = {"format": "minitron-train-checkpoint", "version": 1, "step": step,
                    "consumed_samples": consumed_samples, "layout": common["layout"], "verify": verify,
                    "files": files}  # fmt: skip
        write_json_atomic(partial / MANIFEST, manifest, indent=1)
        if final.exists():  # an older, refused or overwritten checkpoint of the same step
            shutil.rmtree(final)
        os.replace(partial, final)
        _write_latest(root, final.name)
        for _, old in complete_checkpoints(root.parent)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        fsync_directory(root)
    _barrier()
    return final


def _write_latest(root: Path, name: str) -> None:
    write_text_atomic(root / LATEST, name + "\n")


def remove_partials(run_dir) -> list[str]:
    """Delete half-written ``*.partial`` checkpoints left by a killed run (rank 0); returns their names."""
    root = checkpoints_dir(run_dir)
    removed = []
    if _rank() == 0 and root.is_dir():
        for path in root.glob("*.partial"):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    _barrier()
    return removed


# ---- verifying and resuming ------------------------------------------------------------------------


def verify(path: Path) -> Optional[str]:
    """None when every file of the checkpoint at ``path`` matches its manifest, else what is wrong.

    Collective: every rank checks a share of the files; all ranks return the same answer.
    """
    problem, expected, mode = None, {}, "size"
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        expected, mode = dict(manifest["files"]), manifest["verify"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        problem = f"its manifest {MANIFEST} is missing or unreadable ({type(err).__name__})"
    problems = [p for p in _all_gather(problem) if p]  # every rank takes the same branch
    if problems:
        return problems[0]
    actual = _digests(path, sorted(expected), mode, sync=False)
    for name in sorted(expected):
        if actual[name] is None:
            return f"file {name} is missing"
        if actual[name] != expected[name]:
            what = "size" if actual[name]["size"] != expected[name]["size"] else "CRC32"
            return f"file {name} has the wrong {what} ({actual[name]} instead of {expected[name]})"
    return None


def find_resumable(run_dir) -> Optional[Path]:
    """The newest valid checkpoint of ``run_dir`` (None when there is none); refuses corrupt newer ones.

    A refused checkpoint is renamed ``iter_N.corrupt`` and a warning names the problem. When checkpoints
    exist but none is valid, raises :class:`MinitronError` rather than silently starting over.
    """
    refused = []
    for step, path in reversed(complete_checkpoints(run_dir)):
        problem = verify(path)
        if problem is None:
            if refused:
                runtime.log(f"resuming from the previous checkpoint {path.name} instead")
                if _rank() == 0:
                    _write_latest(path.parent, path.name)
            return path
        corrupt = path.with_name(path.name + ".corrupt")
        runtime.log(
            f"warning: refusing checkpoint {path}: {problem}; it is corrupt or half-written. "
            f"Moved to {corrupt.name}; falling back to the checkpoint before it"
        )
        _barrier()
        if _rank() == 0:
            shutil.rmtree(corrupt, ignore_errors=True)
            os.replace(path, corrupt)
        _barrier()
        refused.append(path.name)
    if refused:
        raise MinitronError(
            f"{checkpoints_dir(run_dir)}: no valid checkpoint to resume from (refused {', '.join(refused)}, "
            "now *.corrupt); "
            "run again to start from step 0, or pass checkpoint.resume=false"
        )
    return None


def load(parts, path: Path, arch: dict) -> tuple[int, int]:
    """Load the training state of checkpoint ``path`` into ``parts``; returns (step, consumed_samples).

    Model and optimizer reshard to the current layout. RNG states are restored only in the layout that
    saved them.
    """
    from megatron.core import dist_checkpointing

    common = dist_checkpointing.load_common_state_dict(str(path))
    if common["arch"] != arch:
        raise MinitronError(
            f"{path} was written for another model architecture than model.path's; "
            "use a new output directory (or the model the run started from)"
        )
    saved, current = common["layout"], layout(parts)
    if saved["distributed_optimizer"] != current["distributed_optimizer"]:
        raise MinitronError(
            f"{path} holds {'distributed' if saved['distributed_optimizer'] else 'non-distributed'} optimizer state; "
            f"resume with train.distributed_optimizer={str(saved['distributed_optimizer']).lower()}"
        )
    same_layout = saved == current
    state = dist_checkpointing.load(_sharded_state_dict(parts, True, same_layout), str(path))
    parts.module.load_state_dict(state["model"])
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scheduler.load_state_dict(common["scheduler"])
    if same_layout:
        rng.restore(state["rng_state"])
    else:
        runtime.log(
            f"resharding {path.name}: saved at TP={saved['tp']} PP={saved['pp']} DP={saved['dp']}, "
            f"now TP={current['tp']} PP={current['pp']} DP={current['dp']} (RNG states not restored)"
        )
    return int(common["step"]), int(common["consumed_samples"])
