"""Names for the schema's numeric enums (operator codes, tensor types) and opcode resolution."""

from __future__ import annotations

from ai_edge_litert import schema_py_generated as schema

EDGETPU_CUSTOM_CODE = "edgetpu-custom-op"


def _enum_names(enum_class: type) -> dict[int, str]:
    return {value: name for name, value in vars(enum_class).items() if not name.startswith("_") and isinstance(value, int)}


BUILTIN_OPERATOR_NAMES = _enum_names(schema.BuiltinOperator)
TENSOR_TYPE_NAMES = _enum_names(schema.TensorType)


def builtin_code(op_code: schema.OperatorCodeT) -> int:
    """The operator's builtin code, whichever of the two schema fields holds it.

    Old files only fill ``deprecatedBuiltinCode`` (an int8); new ones fill ``builtinCode`` and
    clamp the deprecated field at 127 (PLACEHOLDER_FOR_GREATER_OP_CODES), so the larger one wins.
    """
    return max(int(op_code.builtinCode), int(op_code.deprecatedBuiltinCode))


def custom_code(op_code: schema.OperatorCodeT) -> str | None:
    """The custom code of a CUSTOM operator as text, else ``None``."""
    if builtin_code(op_code) != schema.BuiltinOperator.CUSTOM or op_code.customCode is None:
        return None
    code = op_code.customCode
    return code.decode("utf-8", "replace") if isinstance(code, (bytes, bytearray)) else str(code)


def operator_name(op_code: schema.OperatorCodeT) -> str:
    """``CONV_2D`` for builtins, the custom code (e.g. ``edgetpu-custom-op``) for custom operators."""
    custom = custom_code(op_code)
    if custom is not None:
        return custom
    code = builtin_code(op_code)
    return BUILTIN_OPERATOR_NAMES.get(code, f"BUILTIN_{code}")


def tensor_type_name(type_code: int) -> str:
    """``UINT8``, ``INT8``, ``FLOAT32``..."""
    return TENSOR_TYPE_NAMES.get(int(type_code), f"TYPE_{type_code}")


def as_text(value: bytes | str | None) -> str:
    """Schema strings arrive as bytes; return them as text."""
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)
