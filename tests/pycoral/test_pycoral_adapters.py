"""lastlayer.pycoral.adapters and utils on a raw LiteRT interpreter, as PyCoral's users call them."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ai_edge_litert import interpreter as litert
from PIL import Image

from lastlayer.errors import EdgeTpuError
from lastlayer.pycoral.adapters import classify, common
from lastlayer.pycoral.utils import dataset, edgetpu

from conftest import CLASSIFIER_V2, EXTRACTOR, EXTRACTOR_EDGETPU


@pytest.fixture
def classifier(model_file):
    interpreter = edgetpu.make_interpreter(str(model_file(CLASSIFIER_V2)))
    interpreter.allocate_tensors()
    return interpreter


def _classify(interpreter, image_path, **kwargs):
    image = Image.open(image_path).convert("RGB").resize(common.input_size(interpreter), Image.LANCZOS)
    common.set_input(interpreter, image)
    interpreter.invoke()
    return classify.get_classes(interpreter, **kwargs)


def test_make_interpreter_runs_cpu_models_without_an_edge_tpu(classifier, model_file):
    assert isinstance(classifier, litert.Interpreter)
    assert common.input_size(classifier) == (224, 224) and classify.num_classes(classifier) == 1001
    assert common.input_details(classifier, "dtype") == np.uint8
    from_bytes = edgetpu.make_interpreter(model_file(EXTRACTOR).read_bytes(), device=":0")  # device ignored on CPU
    from_bytes.allocate_tensors()
    assert classify.num_classes(from_bytes) == 1024


def test_cat_and_parrot_are_recognised(classifier, images_dir, models_dir):
    labels = dataset.read_label_file(models_dir / "imagenet_labels.txt")
    cat = _classify(classifier, images_dir / "cat.bmp", top_k=1)
    assert len(cat) == 1 and "cat" in labels[int(cat[0].id)].lower() and cat[0].score > 0.3
    parrot = _classify(classifier, images_dir / "parrot.jpg", top_k=3)
    assert labels[int(parrot[0].id)] == "macaw" and parrot[0].score > 0.9
    assert [c.score for c in parrot] == sorted((c.score for c in parrot), reverse=True)
    assert isinstance(parrot[0].id, np.integer)


def test_get_scores_dequantizes_like_pycoral(classifier, images_dir):
    _classify(classifier, images_dir / "cat.bmp")
    scores = classify.get_scores(classifier)
    raw = common.output_tensor(classifier, 0).reshape(-1)
    assert scores.dtype == np.float64 and scores.shape == (1001,)
    np.testing.assert_allclose(scores, raw.astype(np.int64) / 256.0)


def test_input_tensor_is_a_writable_view_and_set_input_takes_arrays(classifier):
    pixels = np.full((224, 224, 3), 7, np.uint8)
    common.set_input(classifier, pixels)
    assert common.input_tensor(classifier).shape == (224, 224, 3)
    assert (common.input_tensor(classifier) == 7).all()


def test_set_resized_input_keeps_the_aspect_ratio(classifier):
    image = Image.new("RGB", (448, 224), (255, 255, 255))
    result, scale = common.set_resized_input(classifier, image.size, lambda size: image.resize(size, Image.NEAREST))
    assert scale == (0.5, 0.5) and result.size == (224, 112)
    tensor = common.input_tensor(classifier)
    assert (tensor[:112] == 255).all() and (tensor[112:] == 0).all()


SCORES = np.array([0.1, 0.9, 0.5, 0.95])


@pytest.mark.parametrize(
    ("kwargs", "ids"),
    [({}, [3, 1, 2, 0]), ({"score_threshold": 0.8}, [3, 1]), ({"score_threshold": 0.99}, []),
     ({"top_k": 3}, [3, 1, 2]), ({"top_k": 300}, [3, 1, 2, 0]), ({"top_k": 3, "score_threshold": 0.7}, [3, 1]),
     ({"score_threshold": 0.5}, [3, 1, 2])],  # the threshold is inclusive
)
def test_classes_from_scores_order_and_threshold(kwargs, ids):
    assert [int(c.id) for c in classify.get_classes_from_scores(SCORES, **kwargs)] == ids


def test_top_k_zero_returns_everything_like_pycoral_and_ties_are_ordered_by_id():
    assert [int(c.id) for c in classify.get_classes_from_scores(SCORES, top_k=0)] == [3, 1, 2, 0]
    ties = classify.get_classes_from_scores(np.array([0.5, 0.2, 0.5, 0.5]), top_k=math.inf)
    assert [int(c.id) for c in ties] == [0, 2, 3, 1]
    assert [int(c.id) for c in classify.get_classes_from_scores(np.array([0.5, 0.2, 0.5, 0.5]), top_k=2)] == [0, 2]
    with pytest.raises(ValueError, match="top_k"):
        classify.get_classes_from_scores(SCORES, top_k=-1)
    assert classify.Class(1, 0.5) == (1, 0.5)


def test_run_inference_with_raw_bytes(classifier, images_dir):
    image = Image.open(images_dir / "parrot.jpg").convert("RGB").resize((224, 224), Image.LANCZOS)
    edgetpu.run_inference(classifier, np.asarray(image).tobytes())
    from_bytes = classify.get_scores(classifier)
    edgetpu.run_inference(classifier, np.asarray(image).reshape(-1))
    np.testing.assert_array_equal(classify.get_scores(classifier), from_bytes)
    common.set_input(classifier, image)
    classifier.invoke()
    np.testing.assert_array_equal(classify.get_scores(classifier), from_bytes)
    with pytest.raises(ValueError, match="Input buffer size 10 does not match the input tensor size 150528"):
        edgetpu.run_inference(classifier, b"0123456789")


def test_edgetpu_model_without_the_runtime_is_a_value_error_saying_what_to_do(model_file):
    if edgetpu.list_edge_tpus():
        pytest.skip("an Edge TPU is attached")
    with pytest.raises(ValueError, match="Failed to load delegate from libedgetpu") as info:
        edgetpu.make_interpreter(str(model_file(EXTRACTOR_EDGETPU)))
    assert isinstance(info.value, EdgeTpuError) and "CPU build" in str(info.value)


def test_runtime_queries_without_the_runtime(tmp_path):
    if edgetpu._runtime_library() is not None:
        assert isinstance(edgetpu.get_runtime_version(), str)
        return
    assert edgetpu.list_edge_tpus() == [] and edgetpu.set_verbosity(1) is False
    with pytest.raises(EdgeTpuError, match="not installed"):
        edgetpu.get_runtime_version()
    with pytest.raises(ValueError, match="Could not open"):
        edgetpu.make_interpreter(str(tmp_path / "missing.tflite"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0:cat\n1:dog\n", {0: "cat", 1: "dog"}), ("0 cat\n1  dog\n", {0: "cat", 1: "dog"}),
     ("0: tabby cat\n1:  dog\n", {0: "tabby cat", 1: "dog"}), ("tabby cat\ndog\n", {0: "tabby cat", 1: "dog"}),
     ("cat\n\ndog\n", {0: "cat", 1: "", 2: "dog"}), ("5 five\nsix\n5 again\n", {5: "again", 1: "six"}),
     ("-1 minus\n", {0: "-1 minus"}), ("\ufeff0 cat\n", {0: "cat"}), ("", {})],
)
def test_read_label_file_formats(tmp_path, text, expected):
    path = tmp_path / "labels.txt"
    path.write_text(text, encoding="utf-8")
    assert dataset.read_label_file(path) == expected
    assert dataset.read_label_file(str(path)) == expected


def test_read_label_file_missing_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        dataset.read_label_file(tmp_path / "none.txt")
