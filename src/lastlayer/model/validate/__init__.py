"""Structural validation of a parsed model, before any native code sees it.

LiteRT's C++ runtime trusts much of a ``.tflite`` file: an operator input index out of range, a
missing bias, a zero quantization scale or a constant buffer shorter than its tensor can crash the
process (SIGSEGV, SIGABRT, SIGFPE) instead of raising an error. :func:`validate_model` walks the
``ModelT`` object tree and raises a one-line :class:`~lastlayer.errors.ModelError` for everything the
runtime (and lastlayer's own readers of the tree) is not guaranteed to survive.

The rules, one module each: ``structure`` (buffers, operator codes, tensors, graph indices and
order, the main graph's input and output types), ``signatures`` (the operators lastlayer runs and the
tensor types, hence the counts, of their operands: :data:`SIGNATURES`, :data:`OPERATOR_ARITY`),
``tables`` (options tables, operand ranks), ``operators`` (one operator), ``quantization``
(parameters, and the scale relations the quantized kernels compute), ``shapes`` (declared shapes
against what the operators compute), ``memory`` (the tensors' memory against
:data:`MAX_MODEL_MEMORY`) and ``control_flow``. Operators the table does not know are refused, not
trusted; custom operators LiteRT has no kernel for are left to LiteRT, which refuses them.

Index lists arrive as NumPy arrays when the tree was read by ``InitFromPackedBuf`` and as lists when
it was built in Python; both are handled, and big constant buffers are only ever measured, never
converted.
"""

from __future__ import annotations

from ai_edge_litert import schema_py_generated as schema

from lastlayer.model.validate.memory import MAX_MODEL_MEMORY_ENV, max_model_memory
from lastlayer.model.validate.signatures import CUSTOM_SIGNATURES, OPERATOR_ARITY, SIGNATURES, Arity, Signature
from lastlayer.model.validate.structure import Checker
from lastlayer.model.validate.tables import OPERAND_RANKS, OPERATOR_OPTIONS

__all__ = ["MAX_MODEL_MEMORY", "MAX_MODEL_MEMORY_ENV", "Arity", "CUSTOM_SIGNATURES", "OPERAND_RANKS", "OPERATOR_ARITY",
           "OPERATOR_OPTIONS", "SIGNATURES", "Signature", "derived_shapes", "max_model_memory",
           "validate_model"]

MAX_MODEL_MEMORY: int | None = None
"""The most memory (bytes) a model's tensors may need; ``None``: ``$LASTLAYER_MAX_MODEL_MEMORY``, else 2 GiB
(a quarter of the machine's memory when that is less). See :mod:`lastlayer.model.validate.memory`."""


def validate_model(model: schema.ModelT, source: str, *, file_size: int | None = None) -> None:
    """Raise :class:`ModelError` (one line naming ``source``) unless ``model`` is safe to hand to LiteRT.

    ``file_size``, when known, also bounds buffers and custom options stored after the flatbuffer.
    """
    Checker(model, source, file_size).run()


def derived_shapes(model: schema.ModelT, subgraph: int = 0, source: str = "the model") -> list[list[int]]:
    """The shape LiteRT will give each tensor of ``subgraph`` (validating the model first, which may raise)."""
    return Checker(model, source, None).run()[subgraph]
