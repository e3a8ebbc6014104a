"""Input normalisation: option > TFLite metadata > input quantization > default, per channel; written into learned models."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from ai_edge_litert import interpreter as litert

from lastlayer.cli import main
from lastlayer.learn.imprinting import ImprintingHead
from lastlayer.model import metadata_schema_py_generated as meta
from lastlayer.model.export import read_imprinting_layer, write_head
from lastlayer.model.file import ModelFile
from lastlayer.model.metadata import read_metadata
from lastlayer.model.normalization import (
    DEFAULT,
    DEGENERATE_RATIO,
    METADATA,
    OPTION,
    QUANTIZATION,
    NormalizationError,
    NormalizationWarning,
    input_normalization,
    relative_spread,
)
from lastlayer.model.tflite_metadata import TFLITE_METADATA_NAME, read_input_normalization
from lastlayer.runtime import Interpreter

from conftest import EXTRACTOR
from graphs import (
    colour_dataset,
    dequantize_model,
    float_identity_model,
    float_weights,
    int8_extractor,
    layout_extractor,
    with_input_normalization,
)

PIXELS = np.random.default_rng(3).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
PIXELS[0, 0], PIXELS[0, 1] = 0, 255


def reference(pixels: np.ndarray, mean, std, quant: tuple[float, int, type] | None = None) -> np.ndarray:
    """What the model should be fed, written out by hand: (p - mean) / std, then quantized if the input is."""
    real = (pixels.astype(np.float64) - np.asarray(mean, np.float64)) / np.asarray(std, np.float64)
    if quant is None:
        return real.astype(np.float32)
    scale, zero, dtype = quant
    info = np.iinfo(dtype)
    return np.clip(np.round(real / scale + zero), info.min, info.max).astype(dtype)


def fed(interpreter: Interpreter) -> np.ndarray:
    """The tensor the interpreter sets for PIXELS."""
    return interpreter.input_tensor(PIXELS)[0]


def open_tree(tree, name="corpus model") -> ModelFile:
    return ModelFile.from_tree(tree, name)


@pytest.mark.parametrize(("dtype", "scale", "zero", "mean", "std"), [
    (np.uint8, 1.0, 0, 0.0, 1.0),          # calibrated on raw pixels: the EfficientNet case ({0, 1} before)
    (np.int8, 1.0, -128, 0.0, 1.0),        # the same range in int8
    (np.uint8, 1 / 255, 0, 0.0, 255.0),    # 0..1
])
def test_a_pixel_range_in_the_input_quantization_decides(dtype, scale, zero, mean, std):
    model = open_tree(dequantize_model(dtype, scale, zero))
    interpreter = Interpreter(model)
    assert interpreter.normalization.source == QUANTIZATION and interpreter.normalization.mean == (mean,)
    np.testing.assert_array_equal(fed(interpreter), reference(PIXELS, mean, std, (scale, zero, dtype)))
    if (scale, zero) == (1.0, 0):
        np.testing.assert_array_equal(fed(interpreter), PIXELS)  # raw pixels, all 256 values kept


def test_other_quantizations_take_the_pycoral_default():
    model = open_tree(dequantize_model(np.uint8, 0.02, 100))
    interpreter = Interpreter(model)
    assert interpreter.normalization.source == DEFAULT and interpreter.normalization.mean == (128.0,)
    np.testing.assert_array_equal(fed(interpreter), reference(PIXELS, 128, 128, (0.02, 100, np.uint8)))


def test_float_input_metadata_and_default():
    plain = Interpreter(open_tree(float_identity_model()))
    assert plain.normalization.source == DEFAULT
    np.testing.assert_allclose(fed(plain), reference(PIXELS, 128, 128), rtol=1e-6)
    keras = Interpreter(open_tree(with_input_normalization(float_identity_model(), 0.0, 1.0)))  # expects 0..255
    assert keras.normalization.source == METADATA
    np.testing.assert_array_equal(fed(keras), PIXELS.astype(np.float32))


def test_per_channel_metadata_and_options():
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)
    model = open_tree(with_input_normalization(float_identity_model(), mean, std))
    assert read_input_normalization(model.tree) == (list(np.float32(mean)), list(np.float32(std)))
    np.testing.assert_allclose(fed(Interpreter(model)), reference(PIXELS, np.float32(mean), np.float32(std)), rtol=1e-5)
    option = Interpreter(model, input_mean="1,2,3", input_std=[2, 4, 8])
    assert option.normalization.source == OPTION
    np.testing.assert_allclose(fed(option), reference(PIXELS, (1, 2, 3), (2, 4, 8)), rtol=1e-6)


def test_an_option_beats_metadata_and_the_rest_comes_from_the_model():
    model = open_tree(with_input_normalization(float_identity_model(), 0.0, 2.0))
    only_mean = Interpreter(model, input_mean=100)
    assert only_mean.normalization.source == OPTION and only_mean.normalization.std == (2.0,)
    np.testing.assert_allclose(fed(only_mean), reference(PIXELS, 100, 2), rtol=1e-6)


def test_metadata_beats_the_input_quantization_and_a_quantize_after_a_float_input_counts():
    calibrated = open_tree(int8_extractor(io="float32"))  # float input -> QUANTIZE(int8, range 0..255)
    decided = input_normalization(calibrated)
    assert decided.source == QUANTIZATION and (decided.mean, decided.std) == ((0.0,), (1.0,))
    np.testing.assert_array_equal(fed(Interpreter(calibrated)), PIXELS.astype(np.float32))
    described = open_tree(with_input_normalization(int8_extractor(io="float32"), 127.5, 127.5))
    assert input_normalization(described).source == METADATA
    np.testing.assert_allclose(fed(Interpreter(described)), reference(PIXELS, 127.5, 127.5), rtol=1e-6)


def test_metadata_within_one_step_of_the_input_quantization_feeds_raw_pixels(model_file):
    model = ModelFile.read(model_file("tf2_mobilenet_v2_1.0_224_ptq.tflite"))  # metadata 127.5/127.5, input (1/127.5, 127)
    interpreter = Interpreter(model)
    assert interpreter.normalization.source == METADATA
    pixels = np.random.default_rng(0).integers(0, 256, size=(224, 224, 3), dtype=np.uint8)
    np.testing.assert_array_equal(interpreter.input_tensor(pixels)[0], pixels)


@pytest.mark.parametrize(("mean", "std", "match"), [("1,2", None, "2 values"), (None, 0, "divide by zero"), ("a,b", None, "not a number")])
def test_unusable_values_are_one_line_errors_about_the_normalization(mean, std, match):
    with pytest.raises(NormalizationError, match=match) as info:
        Interpreter(open_tree(float_identity_model()), input_mean=mean, input_std=std)
    assert info.value.subject == "normalization" and "--" not in str(info.value)


def test_learned_models_carry_the_normalisation_labels_and_state():
    base = open_tree(layout_extractor(features=4))
    head = ImprintingHead(scale=10.0)
    head.add(np.eye(4)[:2], 0, "a")
    head.add(np.eye(4)[2:], 1, "b")
    chosen = input_normalization(base, (1, 2, 3), 4)
    saved = ModelFile.from_bytes(write_head(base, head.export(), normalization=chosen))
    parsed = meta.ModelMetadataT.InitFromPackedBuf(read_metadata(saved.tree, TFLITE_METADATA_NAME), 0)
    unit = parsed.subgraphMetadata[0].inputTensorMetadata[0].processUnits[0]
    assert unit.optionsType == meta.ProcessUnitOptions.NormalizationOptions
    assert list(unit.options.mean) == [1, 2, 3] and list(unit.options.std) == [4]
    assert saved.labels == {0: "a", 1: "b"} and read_imprinting_layer(saved).labels == ["a", "b"]
    again = input_normalization(saved)
    assert again.source == METADATA and (again.mean, again.std) == ((1.0, 2.0, 3.0), (4.0,))


def _spread_ratio(interpreter: Interpreter, images: list[np.ndarray]) -> float:
    outputs = np.stack([interpreter.run(p) for p in images])
    return relative_spread(outputs) / relative_spread(np.stack([p[::4, ::4].astype(np.float32).reshape(-1) for p in images]))


def _photos(folder, size: int) -> list[np.ndarray]:
    from lastlayer.images.decode import load_resized

    return [load_resized(p, (size, size)) for p in sorted(folder.rglob("*.png"))][::2][:8]


def test_a_float_extractor_fed_too_small_values_warns_once(tmp_path):
    images = _photos(colour_dataset(tmp_path, ("red", "green", "blue", "grey"), per_class=4, size=32), 32)
    expects_0_255 = open_tree(layout_extractor(size=32, rescale=(1 / 127.5, -1.0)))  # Keras-style built-in preprocessing
    wrong = Interpreter(expects_0_255)
    with pytest.warns(NormalizationWarning, match="hardly differ.*mean 0 and std 1"):
        for pixels in images:
            wrong.run(pixels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wrong.run(images[0])  # once only
        right = Interpreter(open_tree(with_input_normalization(layout_extractor(size=32, rescale=(1 / 127.5, -1.0)), 0, 1)))
        for pixels in images:
            right.run(pixels)
    fed_right = _spread_ratio(Interpreter(expects_0_255, input_mean=0, input_std=1), images)
    fed_wrong = _spread_ratio(Interpreter(expects_0_255, input_mean=128, input_std=128), images)
    assert fed_wrong < DEGENERATE_RATIO / 10 and fed_right > 10 * fed_wrong


def test_degenerate_threshold_separates_real_float_networks(model_file, datasets_dir):
    """The measurement behind DEGENERATE_RATIO: float MobileNet v1 (dequantized weights), fed right and 127.5x too small."""
    from lastlayer.images.decode import load_resized

    model = open_tree(float_weights(ModelFile.read(model_file(EXTRACTOR)).copy_tree()), "float mobilenet v1")
    flowers = sorted((datasets_dir / "flowers" / "daisy").iterdir())[:4] + sorted((datasets_dir / "flowers" / "roses").iterdir())[:4]
    images = [load_resized(p, (224, 224)) for p in flowers]
    assert _spread_ratio(Interpreter(model, input_mean=128, input_std=128), images) > 1.5 * DEGENERATE_RATIO
    assert _spread_ratio(Interpreter(model, input_mean=128, input_std=128 * 127.5), images) < DEGENERATE_RATIO / 1.4


def test_inspect_shows_types_and_the_normalisation_with_its_source(tmp_path, capsys):
    from lastlayer.model.io import save_model

    path = save_model(dequantize_model(np.uint8, 1.0, 0), tmp_path / "raw.tflite")
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "input:  uint8[1, 8, 8, 3] (NHWC RGB 8x8)" in text and "output: float32[1, 8, 8, 3]" in text
    assert "normalisation: mean 0, std 1 (input quantization: input (scale 1, zero point 0) covers 0..255: raw pixels)" in text
    assert main(["inspect", str(path), "--json"]) == 0
    import json

    data = json.loads(capsys.readouterr().out)
    assert data["normalization"]["source"] == "input quantization" and data["input_type"] == "uint8"


def test_classify_takes_per_channel_normalisation_and_refuses_nonsense(tmp_path, capsys):
    from lastlayer.model.io import save_model

    path = save_model(with_input_normalization(float_identity_model((1, 8, 8, 3)), 0, 1), tmp_path / "m.tflite")
    image = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(PIXELS).save(image)
    assert main(["classify", "--model", str(path), str(image), "--input-mean", "1,2,3", "--input-std", "2", "--json"]) == 0
    with pytest.raises(SystemExit) as stopped:
        main(["classify", "--model", str(path), str(image), "--input-mean", "1,x"])
    assert stopped.value.code == 2
    assert main(["classify", "--model", str(path), str(image), "--input-mean", "1,2"]) == 1
    assert "(--input-mean / --input-std)" in capsys.readouterr().err


def test_normalisation_flags_reach_every_job(monkeypatch):
    seen = {}

    def stop(*args, **kwargs):
        seen.update(args=args, kwargs=kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr("lastlayer.jobs.train.train", stop)
    main(["train", "d", "-o", "o", "--input-mean", "1,2,3", "--input-std", "4", "--output-type", "int8"])
    options = seen["args"][3]
    assert (options.input_mean, options.input_std, options.output_type) == ((1.0, 2.0, 3.0), (4.0,), "int8")
    monkeypatch.setattr("lastlayer.jobs.imprint.imprint", stop)
    main(["imprint", "d", "-o", "o", "--input-std", "2", "--output-type", "float32"])
    options = seen["args"][3]
    assert (options.input_mean, options.input_std, options.output_type) == (None, (2.0,), "float32")
    monkeypatch.setattr("lastlayer.jobs.evaluate.evaluate", stop)
    main(["evaluate", "m.tflite", "d", "--input-mean", "0"])
    assert seen["args"][2].input_mean == (0.0,)


def test_stock_litert_runs_a_model_with_the_metadata():
    data = write_head(open_tree(layout_extractor(features=4)), ImprintingHead(scale=10.0).fit(np.eye(4)[:2], [0, 1]).export())
    stock = litert.Interpreter(model_content=data)
    stock.allocate_tensors()
    stock.set_tensor(stock.get_input_details()[0]["index"], np.zeros((1, 8, 8, 3), np.float32))
    stock.invoke()
    assert stock.get_output_details()[0]["dtype"] == np.float32


def test_the_warning_is_repeated_when_the_embeddings_come_from_the_cache(tmp_path):
    from lastlayer.embeddings.cache import embed_dataset
    from lastlayer.files.datasets import load_dataset

    folder = colour_dataset(tmp_path, ("red", "green", "blue", "grey"), per_class=4, size=32)
    model = open_tree(layout_extractor(size=32, rescale=(1 / 127.5, -1.0)))
    with pytest.warns(NormalizationWarning, match="hardly differ"):
        first = embed_dataset(Interpreter(model), load_dataset(folder), progress=False)
    with pytest.warns(NormalizationWarning, match="hardly differ"):
        second = embed_dataset(Interpreter(model), load_dataset(folder), progress=False)
    assert first.cached == 0 and second.cached == len(second.X)
