"""Reading and writing safetensors one tensor at a time.

Reading goes through the ``safetensors`` library (memory-mapped, one tensor materialised at a time),
after :func:`check_safetensors_file` has verified that the file is complete. Writing uses
:class:`StreamingSafetensorsWriter`: the header is laid out from the tensors' names, dtypes and shapes
first, then each tensor is appended as it is produced, so an export never holds more than one
gathered tensor (the ``safetensors`` library's ``save_file`` needs all of them at once).

File format (https://github.com/huggingface/safetensors): 8-byte little-endian header length N,
N bytes of JSON ``{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}``,
then the raw little-endian tensor bytes.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Iterator

import torch
from safetensors import safe_open

from minitron.errors import MinitronError

DTYPE_CODES = {
    torch.float32: "F32",
    torch.bfloat16: "BF16",
    torch.float16: "F16",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
}
CODE_DTYPES = {code: dtype for dtype, code in DTYPE_CODES.items()}


def read_header(path: Path) -> dict:
    """The JSON header of a safetensors file, with a clear error when it is unreadable."""
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise MinitronError(f"{path}: truncated safetensors file (no header)")
            (length,) = struct.unpack("<Q", raw)
            if length > 100 * 2**20:
                raise MinitronError(f"{path}: not a safetensors file (header length {length})")
            header = f.read(length)
    except OSError as err:
        raise MinitronError(f"{path}: cannot read ({err.strerror})") from None
    if len(header) < length:
        raise MinitronError(f"{path}: truncated safetensors file (header cut short)")
    try:
        return json.loads(header)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise MinitronError(f"{path}: corrupt safetensors header") from None


def check_safetensors_file(path: Path) -> dict:
    """Verify that ``path`` holds every byte its header promises; return the header."""
    header = read_header(path)
    (length,) = struct.unpack("<Q", open(path, "rb").read(8))
    end = max((meta["data_offsets"][1] for name, meta in header.items() if name != "__metadata__"), default=0)
    size = Path(path).stat().st_size
    if size < 8 + length + end:
        raise MinitronError(
            f"{path}: truncated safetensors file ({size} bytes, header promises {8 + length + end}); "
            "re-download or re-export it"
        )
    return header


class SafetensorsReader:
    """All tensors of a (possibly sharded) Hugging Face checkpoint, opened lazily by name."""

    def __init__(self, model_dir: Path):
        model_dir = Path(model_dir)
        index = model_dir / "model.safetensors.index.json"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError):
                raise MinitronError(f"{index}: malformed index (expected a weight_map)") from None
            files = sorted(set(weight_map.values()))
        elif (model_dir / "model.safetensors").is_file():
            files = ["model.safetensors"]
            weight_map = None
        else:
            raise MinitronError(f"model.path={model_dir}: no model.safetensors or model.safetensors.index.json")
        self.name_to_file: dict[str, Path] = {}
        self.dtypes: dict[str, torch.dtype] = {}
        for file in files:
            path = model_dir / file
            if not path.is_file():
                raise MinitronError(f"{path}: listed in the index but missing")
            header = check_safetensors_file(path)
            for name, meta in header.items():
                if name == "__metadata__":
                    continue
                self.name_to_file[name] = path
                self.dtypes[name] = CODE_DTYPES.get(meta["dtype"], torch.float32)
        if weight_map:
            missing = set(weight_map) - set(self.name_to_file)
            if missing:
                raise MinitronError(f"{index}: tensors {sorted(missing)[:3]} are not in their files")
        self._handles: dict[Path, object] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.name_to_file

    def get(self, name: str) -> torch.Tensor:
        if name not in self.name_to_file:
            raise MinitronError(f"checkpoint has no tensor {name!r}")
        path = self.name_to_file[name]
        if path not in self._handles:
            self._handles[path] = safe_open(str(path), framework="pt")
        try:
            return self._handles[path].get_tensor(name)
        except Exception as err:  # safetensors raises its own error types
            raise MinitronError(f"{path}: cannot read tensor {name!r} ({err})") from None

    def dtype(self) -> torch.dtype:
        """The floating dtype most tensors are stored in."""
        counts: dict[torch.dtype, int] = {}
        for dtype in self.dtypes.values():
            counts[dtype] = counts.get(dtype, 0) + 1
        return max(counts, key=counts.get)


class StreamingSafetensorsWriter:
    """Write a safetensors file whose tensors arrive one at a time, in the declared order.

    ``specs`` lists ``(name, shape)`` in write order; every tensor has ``dtype``.
    """

    def __init__(self, path: Path, specs: list[tuple[str, tuple[int, ...]]], dtype: torch.dtype):
        self.path = Path(path)
        self.dtype = dtype
        self.order = [name for name, _ in specs]
        self.shapes = dict(specs)
        itemsize = torch.empty((), dtype=dtype).element_size()
        header: dict = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name, shape in specs:
            nbytes = itemsize * int(torch.Size(shape).numel())
            header[name] = {"dtype": DTYPE_CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        self._file = open(self.path, "wb")
        self._file.write(struct.pack("<Q", len(blob)))
        self._file.write(blob)
        self._next = 0

    def write(self, name: str, tensor: torch.Tensor) -> None:
        expected = self.order[self._next]
        if name != expected:
            raise RuntimeError(f"safetensors writer: got {name}, expected {expected}")
        if tuple(tensor.shape) != tuple(self.shapes[name]):
            raise RuntimeError(f"safetensors writer: {name} has shape {tuple(tensor.shape)}, declared {self.shapes[name]}")
        data = tensor.detach().to(device="cpu", dtype=self.dtype).contiguous()
        self._file.write(memoryview(data.view(torch.uint8).reshape(-1).numpy()))
        self._next += 1

    def close(self) -> None:
        if self._next != len(self.order):
            self._file.close()
            raise RuntimeError(f"safetensors writer: {len(self.order) - self._next} tensors never written")
        self._file.flush()
        self._file.close()


def iter_tensors(reader: SafetensorsReader) -> Iterator[tuple[str, torch.Tensor]]:
    for name in sorted(reader.name_to_file):
        yield name, reader.get(name)
