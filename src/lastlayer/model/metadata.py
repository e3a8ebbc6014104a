"""Named metadata entries of a model (each a buffer of bytes): read one, write or replace one."""

from __future__ import annotations

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from lastlayer.model.names import as_text


def read_metadata(model: schema.ModelT, name: str) -> bytes | None:
    """The bytes of metadata entry ``name``, or ``None`` when the model has no such entry."""
    for entry in model.metadata or []:
        if as_text(entry.name) == name and model.buffers and entry.buffer < len(model.buffers):
            data = model.buffers[entry.buffer].data
            return bytes(np.asarray(data, dtype=np.uint8)) if data is not None else b""
    return None


def write_metadata(model: schema.ModelT, name: str, data: bytes) -> None:
    """Store ``data`` as metadata entry ``name``, replacing an existing entry of that name."""
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(data, dtype=np.uint8)
    model.buffers = list(model.buffers or [])
    for entry in model.metadata or []:
        if as_text(entry.name) == name:
            model.buffers[entry.buffer] = buffer
            return
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = name, len(model.buffers) - 1
    model.metadata = list(model.metadata or []) + [entry]


def remove_metadata(model: schema.ModelT, name: str) -> bool:
    """Drop metadata entry ``name`` (its buffer is emptied, so its bytes leave the file); True if there was one."""
    entries = list(model.metadata or [])
    kept = [entry for entry in entries if as_text(entry.name) != name]
    for entry in entries:
        if as_text(entry.name) == name and model.buffers and entry.buffer < len(model.buffers):
            model.buffers[entry.buffer] = schema.BufferT()
    model.metadata = kept or None
    return len(kept) != len(entries)
