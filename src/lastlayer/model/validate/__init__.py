"""Structural validation of a parsed model, before any native code sees it.

LiteRT's C++ runtime trusts much of a ``.tflite`` file: an operator input index out of range, a
missing bias, a zero quantization scale or a constant buffer shorter than its tensor can crash the
process (SIGSEGV, SIGABRT, SIGFPE) instead of raising an error. :func:`validate_model` walks the
``ModelT`` object tree and raises a one-line :class:`~lastlayer.errors.ModelError` for everything the
runtime (and lastlayer's own readers of the tree) is not guaranteed to survive.

The operator rules are data: :data:`OPERATOR_ARITY` gives each builtin's input/output counts and
which inputs may be omitted (``-1``), :data:`OPERATOR_OPTIONS` the options table it must carry and
:data:`OPERAND_RANKS` the ranks its operands must have. Custom operators (``edgetpu-custom-op``)
may have any number of inputs and outputs.

Index lists arrive as NumPy arrays when the tree was read by ``InitFromPackedBuf`` and as lists when
it was built in Python; both are handled, and big constant buffers are only ever measured, never
converted.
"""

from __future__ import annotations

from ai_edge_litert import schema_py_generated as schema

from lastlayer.model.validate.structure import Checker
from lastlayer.model.validate.tables import (
    BUILTIN_CUSTOM_OPERATORS,
    OPERAND_RANKS,
    OPERATOR_ARITY,
    OPERATOR_OPTIONS,
    Arity,
)

__all__ = ["Arity", "BUILTIN_CUSTOM_OPERATORS", "OPERAND_RANKS", "OPERATOR_ARITY", "OPERATOR_OPTIONS", "validate_model"]


def validate_model(model: schema.ModelT, source: str, *, file_size: int | None = None) -> None:
    """Raise :class:`ModelError` (one line naming ``source``) unless ``model`` is safe to hand to LiteRT.

    ``file_size``, when known, also bounds buffers and custom options stored after the flatbuffer.
    """
    Checker(model, source, file_size).run()
