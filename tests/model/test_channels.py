"""Channels-first ([1, C, H, W]) and grey inputs: fed tensor layout, and classify / imprint / train / teach end to end."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lastlayer.jobs.classify import classify_files
from lastlayer.jobs.imprint import ImprintOptions, imprint
from lastlayer.jobs.train import TrainOptions, train
from lastlayer.model.file import ModelFile
from lastlayer.model.input_layout import image_layout, to_luminance
from lastlayer.model.io import save_model
from lastlayer.runtime import Interpreter

from graphs import (
    colour_dataset,
    dequantize_model,
    float_identity_model,
    layout_extractor,
    quantized_input,
    with_input_normalization,
)

PIXELS = np.random.default_rng(5).integers(0, 256, size=(6, 10, 3), dtype=np.uint8)


@pytest.mark.parametrize(("shape", "layout", "size", "channels"), [
    ([1, 224, 224, 3], "NHWC", (224, 224), 3), ([1, 3, 224, 224], "NCHW", (224, 224), 3), ([1, 3, 6, 10], "NCHW", (10, 6), 3),
    ([1, 1, 28, 28], "NCHW", (28, 28), 1), ([1, 28, 28, 1], "NHWC", (28, 28), 1), ([1, 3, 3, 3], "NHWC", (3, 3), 3),
])
def test_layout_is_read_from_the_shape(shape, layout, size, channels):
    found = image_layout(shape)
    assert (found.layout, found.size, found.channels) == (layout, size, channels)


def test_luminance_is_pillows():
    expected = np.asarray(Image.fromarray(PIXELS).convert("L"))
    np.testing.assert_array_equal(to_luminance(PIXELS)[..., 0], expected)


@pytest.mark.parametrize("tree", [float_identity_model((1, 3, 6, 10)), dequantize_model(np.uint8, 1.0, 0, (1, 3, 6, 10))],
                         ids=["float", "uint8"])
def test_channels_first_inputs_get_transposed_pixels(tree):
    interpreter = Interpreter(ModelFile.from_tree(tree))
    assert interpreter.input_size == (10, 6)
    seen = interpreter.run(PIXELS).reshape(3, 6, 10)
    mean, std = interpreter.normalization.mean[0], interpreter.normalization.std[0]
    np.testing.assert_allclose(seen, (np.transpose(PIXELS, (2, 0, 1)).astype(np.float32) - mean) / std, rtol=1e-6)


@pytest.mark.parametrize("shape", [(1, 6, 10, 1), (1, 1, 6, 10)], ids=["NHWC", "NCHW"])
def test_grey_inputs_get_luminance(shape):
    interpreter = Interpreter(ModelFile.from_tree(dequantize_model(np.uint8, 1.0, 0, shape)))
    grey = np.asarray(Image.fromarray(PIXELS).convert("L"), dtype=np.float32)
    np.testing.assert_array_equal(interpreter.run(PIXELS).reshape(6, 10), grey)


EXTRACTORS = {  # float ones say how they are fed (metadata), so the degenerate-embedding check stays quiet on these tiny nets
    "nchw-float": lambda: with_input_normalization(layout_extractor(size=24, channels_first=True), 128, 128),
    "nchw-uint8": lambda: quantized_input(layout_extractor(size=24, channels_first=True), np.uint8, 1.0, 0),
    "grey-nhwc": lambda: with_input_normalization(layout_extractor(size=24, channels=1), 128, 128),
    "grey-nchw": lambda: with_input_normalization(layout_extractor(size=24, channels=1, channels_first=True), 128, 128),
}


@pytest.mark.parametrize("name", list(EXTRACTORS))
def test_channels_first_and_grey_models_learn_end_to_end(name, tmp_path):
    data = colour_dataset(tmp_path / "data", per_class=4, size=24)
    base = save_model(EXTRACTORS[name](), tmp_path / f"{name}.tflite")
    trained = train(data, tmp_path / "trained", base, TrainOptions(num_iter=50, val_ratio=0.25, use_cache=False, progress=False),
                    log=lambda line: None)
    imprinted = imprint(data, tmp_path / "imprinted", base, ImprintOptions(test_ratio=0.25, use_cache=False, progress=False),
                        log=lambda line: None)
    image = next((data / "red").iterdir())
    for result in (trained, imprinted):
        scores = classify_files(result.model_path, [image], top_k=3)
        assert not scores.unreadable and scores.results[0].classes
        assert Interpreter(ModelFile.read(result.model_path)).input_shape == Interpreter(ModelFile.read(base)).input_shape


def test_teaching_session_on_a_channels_first_model(tmp_path):
    from lastlayer.teach.session import TeachingSession

    data = colour_dataset(tmp_path / "data", classes=("red", "blue"), per_class=2, size=24)
    base = save_model(EXTRACTORS["nchw-uint8"](), tmp_path / "nchw.tflite")
    with TeachingSession(tmp_path / "state", base) as session:
        assert session.input_size == (24, 24)
        for name in ("red", "blue"):
            for path in sorted((data / name).iterdir()):
                session.add_examples(name, np.asarray(Image.open(path).convert("RGB")))
        assert session.predict(np.asarray(Image.open(next((data / "red").iterdir())).convert("RGB"))).top[0] == "red"
        model_path, _ = session.export(tmp_path / "export")
    assert Interpreter(ModelFile.read(model_path)).input_shape == (1, 3, 24, 24)
