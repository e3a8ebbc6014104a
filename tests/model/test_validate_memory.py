"""The memory bound: a model whose tensors need more than the limit is refused before LiteRT allocates them."""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

import lastlayer.model.validate as validate
from lastlayer.errors import ModelError
from lastlayer.model.edit import add_operator, add_tensor, new_model, set_io
from lastlayer.model.io import load_model, model_to_bytes
from lastlayer.model.validate import MAX_MODEL_MEMORY_ENV, max_model_memory, validate_model
from lastlayer.model.validate.memory import DEFAULT_MAX_MODEL_MEMORY, parse_bytes

MIB = 1 << 20


def relu_chain(side: int, steps: int = 3, channels: int = 64) -> schema.ModelT:
    """A float image ``[1, side, side, C]`` through ``steps`` RELUs: each step keeps two such tensors alive."""
    model = new_model("test: relu chain")
    x = first = add_tensor(model, "image", [1, side, side, channels], np.float32)
    for step in range(steps):
        y = add_tensor(model, f"relu{step}", [1, side, side, channels], np.float32)
        add_operator(model, schema.BuiltinOperator.RELU, [x], [y])
        x = y
    set_io(model, [first], [x])
    return model


@pytest.fixture
def limit(monkeypatch):
    """``limit(text)`` sets $LASTLAYER_MAX_MODEL_MEMORY for the test."""
    monkeypatch.setattr(validate, "MAX_MODEL_MEMORY", None)
    return lambda text: monkeypatch.setenv(MAX_MODEL_MEMORY_ENV, text)


def test_a_model_over_the_limit_is_refused_with_both_numbers_and_the_setting(limit, tmp_path):
    model = relu_chain(256)  # 16 MiB per tensor, two alive at once: 32 MiB
    path = tmp_path / "big.tflite"
    path.write_bytes(model_to_bytes(model))
    limit("20M")
    with pytest.raises(ModelError) as info:
        load_model(path)
    message = str(info.value)
    assert message.startswith(f"{path} needs about 32.0 MiB for its tensors"), message
    assert "largest: tensor 0 'image' [1, 256, 256, 64], 16.0 MiB" in message and "limit of 20.0 MiB" in message, message
    assert f"raise {MAX_MODEL_MEMORY_ENV}" in message and "\n" not in message, message


def test_a_model_under_the_limit_loads_and_runs(limit, tmp_path):
    from lastlayer.runtime import Interpreter

    path = tmp_path / "fits.tflite"
    path.write_bytes(model_to_bytes(relu_chain(256)))
    limit("40M")
    load_model(path)
    interpreter = Interpreter(path, num_threads=1)  # allocates the tensors the estimate counted
    assert interpreter.input_shape == (1, 256, 256, 64)


def test_the_estimate_counts_the_activations_alive_at_once_not_all_of_them(limit):
    limit("40M")
    validate_model(relu_chain(256, steps=8), "long chain")  # 9 tensors of 16 MiB, never more than 2 alive
    limit("30M")
    with pytest.raises(ModelError, match="needs about 32.0 MiB"):
        validate_model(relu_chain(256, steps=8), "long chain")


def test_the_module_setting_wins_over_the_environment(limit, monkeypatch):
    limit("1K")
    monkeypatch.setattr(validate, "MAX_MODEL_MEMORY", 64 * MIB)
    assert max_model_memory() == 64 * MIB
    validate_model(relu_chain(256), "chain")


def test_default_limit_is_well_under_the_machines_memory(monkeypatch):
    monkeypatch.delenv(MAX_MODEL_MEMORY_ENV, raising=False)
    monkeypatch.setattr(validate, "MAX_MODEL_MEMORY", None)
    physical = validate.memory._physical_memory()
    assert max_model_memory() == min(DEFAULT_MAX_MODEL_MEMORY, physical // 4 if physical else DEFAULT_MAX_MODEL_MEMORY)
    monkeypatch.setenv(MAX_MODEL_MEMORY_ENV, "not a size")  # unreadable: the default, as for LASTLAYER_MAX_PIXELS
    assert max_model_memory() == min(DEFAULT_MAX_MODEL_MEMORY, physical // 4 if physical else DEFAULT_MAX_MODEL_MEMORY)


@pytest.mark.parametrize(("text", "size"), [("4G", 4 << 30), ("512M", 512 * MIB), ("512MiB", 512 * MIB), ("1.5g", 3 << 29),
                                            ("3e9", 3_000_000_000), ("1_000_000", 1_000_000), ("64kB", 64 << 10),
                                            ("", None), ("-1G", None), ("lots", None)])
def test_sizes_read_from_the_environment(text, size):
    assert parse_bytes(text) == size
