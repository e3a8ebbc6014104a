"""A learned model keeps its base's output type (uint8, int8, float32) unless asked otherwise; imprinting models stay resumable."""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert import interpreter as litert

from lastlayer.jobs.imprint import ImprintOptions, imprint
from lastlayer.jobs.train import TrainOptions, train
from lastlayer.learn.imprinting import ImprintingHead
from lastlayer.learn.softmax import SoftmaxRegression
from lastlayer.model.edgetpu import check_model
from lastlayer.model.export import original_output_type, output_type_of, read_imprinting_layer, write_head
from lastlayer.model.file import ModelFile, ModelKind
from lastlayer.model.imprinting import find_structure
from lastlayer.model.io import save_model

from graphs import (
    colour_dataset,
    dynamic_batch,
    int8_classifier,
    int8_extractor,
    layout_extractor,
    quantized_chain,
    quantized_input,
)


def stock_run(data: bytes, pixels: np.ndarray) -> tuple[np.dtype, np.ndarray]:
    """Run model bytes in a stock LiteRT interpreter with raw uint8 pixels fed as the input type wants; return (dtype, scores)."""
    stock = litert.Interpreter(model_content=data)
    stock.allocate_tensors()
    detail = stock.get_input_details()[0]
    value = pixels.astype(np.float32) if detail["dtype"] == np.float32 else \
        (pixels.astype(np.int16) - (128 if detail["dtype"] == np.int8 else 0)).astype(detail["dtype"])
    stock.set_tensor(detail["index"], value[np.newaxis])
    stock.invoke()
    out = stock.get_output_details()[0]
    raw = stock.get_tensor(out["index"]).reshape(-1)
    scale, zero = out["quantization"]
    scores = raw.astype(np.float32) if out["dtype"] == np.float32 else scale * (raw.astype(np.float32) - zero)
    return out["dtype"], scores


BASES = {  # name: (tree builder, the original output type)
    "int8 classifier, float I/O": (lambda: int8_classifier(io="float32"), "float32"),
    "int8 classifier, uint8 I/O": (lambda: int8_classifier(io="uint8"), "uint8"),
    "int8 classifier, int8 I/O": (lambda: int8_classifier(io="int8"), "int8"),
    "int8 extractor, float input": (lambda: int8_extractor(io="float32"), "float32"),
    "int8 extractor, uint8 input": (lambda: int8_extractor(io="uint8"), "uint8"),
    "float extractor, uint8 input": (lambda: quantized_input(layout_extractor(), np.uint8, 1.0, 0), "uint8"),
    "float extractor": (lambda: layout_extractor(), "float32"),
}
PIXELS = np.random.default_rng(2).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)


def _fitted(dim: int):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, dim)) + 1.0, np.arange(30) % 3
    dense = SoftmaxRegression(num_iter=50, seed=0).fit(X, y).export(["a", "b", "c"])
    rows = ImprintingHead(scale=10.0)
    for k in range(3):
        rows.add(X[y == k], k, "abc"[k])
    return dense, rows.export()


@pytest.mark.parametrize("name", list(BASES))
def test_learned_models_keep_the_base_output_type_and_run_in_stock_litert(name):
    build, expected = BASES[name]
    base = ModelFile.from_tree(build(), name)
    assert original_output_type(base) == expected
    for layer in _fitted(6):  # every base here has 6-d embeddings
        data = write_head(base, layer)
        dtype, scores = stock_run(data, PIXELS)
        assert np.dtype(dtype) == np.dtype(expected)
        assert scores.shape == (3,) and abs(scores.sum() - 1) <= 4 / 256
        saved = ModelFile.from_bytes(data)
        assert saved.kind is (ModelKind.IMPRINTING if layer.normalize_input else ModelKind.CLASSIFIER)


@pytest.mark.parametrize("output_type", ["uint8", "int8", "float32"])
@pytest.mark.parametrize("imprinted", [False, True], ids=["dense", "imprinting"])
def test_an_asked_output_type_is_written_with_the_same_scores(output_type, imprinted):
    base = ModelFile.from_tree(int8_classifier(io="float32"))
    dense, rows = _fitted(6)
    layer = rows if imprinted else dense
    reference = stock_run(write_head(base, layer, output_type="float32"), PIXELS)[1]
    dtype, scores = stock_run(write_head(base, layer, output_type=output_type), PIXELS)
    assert np.dtype(dtype) == np.dtype(output_type)
    np.testing.assert_allclose(scores, reference, atol=1 / 256 + 1e-6)


@pytest.mark.parametrize("output_type", ["float32", "int8"])
def test_imprinting_models_with_a_converted_output_are_recognised_and_resumed(output_type):
    base = ModelFile.from_tree(layout_extractor(features=6))
    head = ImprintingHead(scale=10.0)
    rng = np.random.default_rng(1)
    head.add(rng.normal(size=(3, 6)), 0, "a")
    saved = ModelFile.from_bytes(write_head(base, head.export(), output_type=output_type))
    info = find_structure(saved.tree)
    assert saved.kind is ModelKind.IMPRINTING and info is not None and info.output_op is not None
    resumed = ImprintingHead.from_layer(read_imprinting_layer(saved))
    resumed.add(rng.normal(size=(2, 6)), 1, "b")
    again = ModelFile.from_bytes(write_head(saved, resumed.export()))
    assert original_output_type(again) == output_type and read_imprinting_layer(again).labels == ["a", "b"]
    assert len(again.tree.subgraphs[0].operators) == len(saved.tree.subgraphs[0].operators)
    dtype, scores = stock_run(again.data, PIXELS)
    assert np.dtype(dtype) == np.dtype(output_type) and scores.shape == (2,)
    as_uint8 = ModelFile.from_bytes(write_head(again, resumed.export(), output_type="uint8"))
    assert find_structure(as_uint8.tree).output_op is None and original_output_type(as_uint8) == "uint8"


def test_train_and_imprint_jobs_keep_a_uint8_io_int8_model_uint8(tmp_path):
    data = colour_dataset(tmp_path / "data", per_class=4, size=8)
    base = save_model(int8_classifier(io="uint8"), tmp_path / "tf2_style.tflite")
    assert output_type_of(ModelFile.read(base)) == "int8"  # the head computes in int8 ...
    quiet = dict(use_cache=False, progress=False)
    trained = train(data, tmp_path / "t", base, TrainOptions(num_iter=30, **quiet), log=lambda line: None)
    imprinted = imprint(data, tmp_path / "i", base, ImprintOptions(**quiet), log=lambda line: None)
    for result in (trained, imprinted):
        assert result.report["output_type"] == "uint8"  # ... and the model still gives uint8 like the base
        assert original_output_type(ModelFile.read(result.model_path)) == "uint8"
        assert result.report["normalization"]["source"] == "input quantization"
    other = train(data, tmp_path / "f", base, TrainOptions(num_iter=30, output_type="float32", **quiet), log=lambda line: None)
    assert original_output_type(ModelFile.read(other.model_path)) == "float32"


def test_check_names_a_dynamic_batch_and_the_fix_and_prints_plain_numbers():
    from ai_edge_litert import schema_py_generated as schema

    model = dynamic_batch(quantized_chain([(schema.BuiltinOperator.RELU, [1, 8, 8, 3], 0, None, [])]))
    report = check_model(model)
    text = report.to_text()
    assert report.findings[0].rule == "dynamic-batch" and not report.fully_supported
    assert "fixed batch size of 1" in report.findings[0].message and "[-1, 8, 8, 3]" in text
    assert "np." not in text and "int32(" not in text
