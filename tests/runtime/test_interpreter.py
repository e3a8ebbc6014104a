from __future__ import annotations

import numpy as np
import pytest

from lastlayer.errors import EdgeTpuError, ImageError, InferenceError
from lastlayer.images.decode import load_resized
from lastlayer.runtime import Interpreter, extract_embeddings

from conftest import CLASSIFIER_V2, EXTRACTOR, EXTRACTOR_EDGETPU
from graphs import dequantize_model, float_identity_model


def test_classifier_shapes_and_dequantized_scores(model_file, images_dir):
    interp = Interpreter(model_file(CLASSIFIER_V2))
    assert interp.input_size == (224, 224) and interp.output_size == 1001 and not interp.uses_edgetpu
    scores = interp.run_file(images_dir / "cat.bmp")
    assert scores.dtype == np.float32 and scores.shape == (1001,)
    assert 0.9 <= scores.sum() <= 1.0  # quantized softmax rounds each score down to 1/256
    np.testing.assert_allclose(scores, interp.raw_output().astype(np.float32) / 256)


def test_edgetpu_model_without_runtime_says_how_to_proceed(model_file):
    with pytest.raises(EdgeTpuError) as info:
        Interpreter(model_file(EXTRACTOR_EDGETPU))
    message = str(info.value)
    assert "compiled for the Edge TPU" in message and "CPU build" in message and "libedgetpu" in message
    assert "\n" not in message
    with pytest.raises(EdgeTpuError, match="cannot run on the CPU"):
        Interpreter(model_file(EXTRACTOR_EDGETPU), device="cpu")


def test_model_that_fails_to_run_is_a_clear_error(model_file):
    with pytest.raises(InferenceError, match="model_invoking_error.tflite.*fake-op-double"):
        Interpreter(model_file("model_invoking_error.tflite"))


@pytest.mark.parametrize(
    ("dtype", "scale", "zero_point"),
    [(np.uint8, 1 / 128, 128), (np.int8, 1 / 128, 0), (np.uint8, 0.0078431377, 127), (np.int8, 0.02, -5)],
)
def test_quantized_inputs_carry_the_normalised_pixels(dtype, scale, zero_point):
    interp = Interpreter(dequantize_model(dtype, scale, zero_point))
    pixels = np.random.default_rng(1).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    seen = interp.run(pixels).reshape(8, 8, 3)
    np.testing.assert_allclose(seen, (pixels.astype(np.float32) - 128) / 128, atol=scale / 2 + 1e-6)


def test_float_input_gets_normalised_pixels():
    interp = Interpreter(float_identity_model(), input_mean=127.5, input_std=127.5)
    pixels = np.arange(192, dtype=np.uint8).reshape(8, 8, 3)
    np.testing.assert_allclose(interp.run(pixels).reshape(8, 8, 3), (pixels - 127.5) / 127.5, rtol=1e-6)


def test_wrong_image_shape_is_rejected(model_file):
    interp = Interpreter(model_file(EXTRACTOR))
    with pytest.raises(ValueError, match=r"expects an image of shape \[224, 224, 3\]"):
        interp.run(np.zeros((100, 100, 3), dtype=np.uint8))


def test_batch_extraction_matches_one_by_one(model_file, images_dir):
    interp = Interpreter(model_file(EXTRACTOR))
    paths = sorted(images_dir.glob("*.bmp")) + sorted(images_dir.glob("*.jpg"))
    batch = extract_embeddings(interp, paths, progress=False, workers=2)
    assert batch.shape == (len(paths), 1024)
    for row, path in zip(batch, paths):
        np.testing.assert_array_equal(row, interp.run(load_resized(path, (224, 224))))
    assert len({tuple(r) for r in batch}) == len(paths)


def test_batch_extraction_names_a_corrupt_image(model_file, images_dir, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes((images_dir / "owl.jpg").read_bytes()[:300])
    interp = Interpreter(model_file(EXTRACTOR))
    with pytest.raises(ImageError, match="broken.jpg"):
        extract_embeddings(interp, [images_dir / "cat.bmp", bad, images_dir / "owl.jpg"], progress=False)
