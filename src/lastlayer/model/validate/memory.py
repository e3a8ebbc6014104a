"""The memory a model's tensors need, checked against a limit before LiteRT allocates anything.

LiteRT (and XNNPACK) size their buffers from the shapes the file declares: a model of a few
kilobytes can ask for gigabytes. The estimate is the peak, over the operators in execution order,
of the bytes of the activations alive at once (a tensor lives from the operator that writes it, or
the start for graph inputs, to its last reader, or the end for graph outputs); constants live in the
file and are not counted. LiteRT's arena holds about that much. A model above the limit is refused
with both numbers and the setting to raise.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

from ai_edge_litert import schema_py_generated as schema

from lastlayer.errors import ModelError
from lastlayer.model.names import as_text
from lastlayer.model.validate.common import ELEMENT_BYTES, ModelContext, ints

MAX_MODEL_MEMORY_ENV = "LASTLAYER_MAX_MODEL_MEMORY"
DEFAULT_MAX_MODEL_MEMORY = 2 << 30
_SUFFIXES = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def parse_bytes(text: str) -> int | None:
    """``"4G"``, ``"512M"``, ``"3e9"``, ``"1_000_000"`` as bytes (K/M/G/T are powers of 1024); ``None`` if unreadable."""
    text = text.strip().replace("_", "").upper().removesuffix("B").removesuffix("I")
    factor = _SUFFIXES.get(text[-1:], 1)
    try:
        value = float(text[:-1] if factor > 1 else text) * factor
    except ValueError:
        return None
    return int(value) if value > 0 else None


def max_model_memory() -> int:
    """The limit in force: ``lastlayer.model.validate.MAX_MODEL_MEMORY``, else ``$LASTLAYER_MAX_MODEL_MEMORY``,
    else 2 GiB (a quarter of the machine's memory when that is less)."""
    chosen = getattr(sys.modules.get("lastlayer.model.validate"), "MAX_MODEL_MEMORY", None)
    if chosen is not None:
        return int(chosen)
    configured = parse_bytes(os.environ.get(MAX_MODEL_MEMORY_ENV, ""))
    if configured is not None:
        return configured
    physical = _physical_memory()
    return min(DEFAULT_MAX_MODEL_MEMORY, physical // 4) if physical else DEFAULT_MAX_MODEL_MEMORY


def size_text(size: float) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{int(size)} bytes"


class MemoryChecks(ModelContext):
    """Mixed into the checker: the peak of live activations of each subgraph against the limit."""

    def tensor_bytes(self, tensor: schema.TensorT, shape: Sequence[int]) -> int:
        count = 1
        for dim in shape:
            count *= dim
        width = ELEMENT_BYTES.get(int(tensor.type), (8,))[-1]  # sub-byte types: one value per byte at most
        return int(count * max(width, 1))

    def check_memory(self, number: int, graph: schema.SubGraphT, op_io: list[tuple[list[int], list[int]]],
                     constants: set[int]) -> None:
        tensors = graph.tensors or []
        end = len(op_io)
        first: dict[int, int] = {}
        last: dict[int, int] = {}
        for step, (ins, outs) in enumerate(op_io):
            for tid in outs:
                first.setdefault(tid, step)
                last[tid] = max(last.get(tid, step), step)
            for tid in ins:
                first.setdefault(tid, -1)  # read but written by no operator: allocated from the start
                last[tid] = max(last.get(tid, step), step)
        for tid in ints(graph.inputs):  # set before the first operator runs
            first[tid] = -1
            last.setdefault(tid, -1)
        for tid in ints(graph.outputs):  # read after the last one
            first.setdefault(tid, -1)
            last[tid] = end
        for tid, tensor in enumerate(tensors):  # state tensors persist between runs
            if tensor.isVariable:
                first[tid], last[tid] = -1, end
        change = [0] * (end + 3)
        largest, largest_tid = 0, -1
        for tid, start in sorted(first.items()):
            if tid in constants:
                continue
            size = self.tensor_bytes(tensors[tid], self.derived[tid])
            if size > largest:
                largest, largest_tid = size, tid
            change[start + 1] += size
            change[last.get(tid, end) + 2] -= size
        peak = alive = 0
        for delta in change:
            alive += delta
            peak = max(peak, alive)
        limit = max_model_memory()
        if peak > limit:
            tensor = tensors[largest_tid]
            raise ModelError(
                f"{self.source} needs about {size_text(peak)} for its tensors (activations alive at once in subgraph {number}; "
                f"largest: tensor {largest_tid} {as_text(tensor.name)!r} {self.derived[largest_tid]}, {size_text(largest)}), "
                f"over lastlayer's limit of {size_text(limit)}; raise {MAX_MODEL_MEMORY_ENV} (bytes, e.g. 8G) to run it")
