from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from lastlayer.cli import main
from lastlayer.errors import ModelError, TrainingError
from lastlayer.learn.imprinting import ImprintingEngine
from lastlayer.model import imprinting as structure
from lastlayer.model import inspect_model, load_model, model_to_bytes
from lastlayer.model.names import as_text
from lastlayer.model.quant import quantize
from lastlayer.runtime import Interpreter

from conftest import EXTRACTOR, EXTRACTOR_EDGETPU
from graphs import float_extractor, make_cosine_classifier

CDH = ("cat", "dog", "hotdog")


def _tiny_engine(**kwargs) -> ImprintingEngine:
    return ImprintingEngine.from_extractor(float_extractor(features=4), scale=10.0, **kwargs)


def _kernel(model_bytes: bytes) -> np.ndarray:
    model = load_model(model_bytes)
    info = structure.validate(model)
    graph = model.subgraphs[0]
    kernel = graph.tensors[graph.operators[info.conv_op].inputs[1]]
    return np.frombuffer(bytes(model.buffers[kernel.buffer].data), dtype=np.uint8).reshape(-1, info.embedding_dim)


def test_imprinting_math_on_hand_made_embeddings():
    engine = _tiny_engine()
    engine.train(np.array([1.0, 0.0, 0.0, 0.0]), 0)
    engine.train(np.array([[0.0, 1.0, 0.0, 0.0]]), 0)
    engine.train(np.array([0.0, 0.0, -0.6, 0.8]), 1)
    model_bytes = engine.serialize_model()
    half = 1 / np.sqrt(2)
    expected = quantize(np.array([[half, half, 0, 0], [0, 0, -0.6, 0.8]]), 1 / 128, 128)
    np.testing.assert_array_equal(_kernel(model_bytes), expected)
    assert expected[0].tolist() == [219, 219, 128, 128] and expected[1].tolist() == [128, 128, 51, 230]
    model = load_model(model_bytes)
    assert as_text(model.description) == "0 1.414214\n1 1.000000\n"
    view = inspect_model(model)
    names = [op.name for op in view.main.operators][-6:]
    assert names == ["L2_NORMALIZATION", "QUANTIZE", "CONV_2D", "MUL", "RESHAPE", "SOFTMAX"]
    out = view.main.tensors[view.main.outputs[0]]
    assert out.shape == [1, 2] and out.quantization.scale == [1 / 256]
    conv_out = view.main.tensors[view.main.operators[-4].outputs[0]]
    assert conv_out.quantization.scale == [1 / 128] and conv_out.quantization.zero_point == [128]
    mul_out = view.main.tensors[view.main.operators[-3].outputs[0]]
    assert mul_out.quantization.scale[0] == pytest.approx(10 / 128) and mul_out.quantization.zero_point == [128]
    assert structure.validate(model).scale_factor == pytest.approx(10.0, rel=1e-6)


def test_train_rules_and_messages():
    engine = _tiny_engine()
    with pytest.raises(TrainingError, match="Model is not trained."):
        engine.serialize_model()
    with pytest.raises(TrainingError, match="too large"):
        engine.train(np.ones(4), 1)
    with pytest.raises(TrainingError, match="Invalid weights array shape"):
        engine.train(np.ones(5), 0)
    with pytest.raises(TrainingError, match="negative"):
        engine.train(np.ones(4), -1)
    with pytest.raises(RuntimeError):  # PyCoral raised RuntimeError here; ported code still catches it
        engine.train(np.ones(3), 0)
    engine.train(np.ones(4), 0)
    assert engine.num_classes == 1 and engine.embedding_dim == 4


def test_resume_equals_training_at_once(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 4))
    b = rng.normal(size=(2, 4))
    c = rng.normal(size=(4, 4))
    together = _tiny_engine()
    together.train(a, 0)
    together.train(b, 1)
    together.train(c, 1)
    first = _tiny_engine()
    first.train(a, 0)
    first.train(b, 1)
    saved = tmp_path / "first.tflite"
    saved.write_bytes(first.serialize_model())
    resumed = ImprintingEngine(saved, keep_classes=True)
    assert resumed.num_classes == 2 and resumed.is_trainable(0) and resumed.shots(1) == 2
    resumed.train(c, 1)
    assert np.abs(_kernel(resumed.serialize_model()).astype(int) - _kernel(together.serialize_model()).astype(int)).max() <= 1


def test_pycoral_written_models_resume_from_the_description(tmp_path):
    engine = _tiny_engine()
    engine.train(np.array([[3.0, 0, 0, 0], [0, 4.0, 0, 0]]), 0)
    model = load_model(engine.serialize_model())
    keep = [m for m in model.metadata if as_text(m.name) not in ("lastlayer_imprinting", "labels")]
    model.metadata = keep  # what PyCoral writes: the description only
    reopened = ImprintingEngine(model_to_bytes(model), keep_classes=True)
    assert reopened.is_trainable(0) and reopened.labels == ["0"]
    norm = np.linalg.norm(reopened._classes[0].weights)
    assert norm == pytest.approx(5.0, rel=1e-2)
    assert ImprintingEngine(model_to_bytes(model)).num_classes == 0  # keep_classes=False starts empty


def _structured(path):
    engine = ImprintingEngine.from_extractor(path)
    engine.train(np.ones(1024) / 32, 0)
    return load_model(engine.serialize_model())


@pytest.mark.parametrize("damage", ["swap_tail", "two_l2", "flat_embedding", "no_l2", "extra_output"])
def test_validator_rejects_what_pycoral_rejects(model_file, damage):
    model = _structured(model_file(EXTRACTOR))
    graph = model.subgraphs[0]
    ops = graph.operators
    expected = {
        "swap_tail": "The last 4 operators must be Conv2d, Mul, Reshape, Softmax",
        "two_l2": "exactly one L2Norm layer",
        "flat_embedding": r"Embedding extractor's output tensor should be \[1, 1, 1, x\]",
        "no_l2": "must have an L2Norm layer",
        "extra_output": "Graph must have output from Softmax",
    }[damage]
    if damage == "swap_tail":
        ops[-3], ops[-2] = ops[-2], ops[-3]
    elif damage == "two_l2":
        ops.insert(len(ops) - 5, copy.deepcopy(ops[-5]))
    elif damage == "flat_embedding":
        graph.tensors[ops[-5].outputs[0]].shape = [1, 1024]
    elif damage == "no_l2":
        model = load_model(model_file(EXTRACTOR))
    else:
        graph.outputs = list(graph.outputs) + [ops[-3].outputs[0]]
    with pytest.raises(ModelError, match=expected):
        ImprintingEngine(model_to_bytes(model))


def _imprint_cdh(engine, images_dir):
    extractor = Interpreter(engine.serialize_extractor_model())
    for class_id, name in enumerate(CDH):
        for path in sorted((images_dir / "imprinting").glob(f"{name}_train_*.bmp")):
            engine.train(extractor.run_file(path), class_id)
        engine.set_label(class_id, name)
    return extractor


@pytest.mark.parametrize("base", [EXTRACTOR, "mobilenet_v2_1.0_224_quant.tflite", "tf2_mobilenet_v2_1.0_224_ptq.tflite"])
def test_cat_dog_hotdog_all_correct_and_saved_scores_match(model_file, images_dir, base):
    engine = ImprintingEngine.from_extractor(model_file(base))
    extractor = _imprint_cdh(engine, images_dir)
    classifier = Interpreter(engine.serialize_model())
    for class_id, name in enumerate(CDH):
        path = images_dir / "imprinting" / f"{name}_test_0.bmp"
        saved = classifier.run_file(path)
        memory = engine.run_inference(extractor.run_file(path))[0]
        assert saved.argmax() == class_id
        assert np.abs(saved - memory).max() <= 2 / 256


def test_remove_class_labels_and_shot_cap(model_file, images_dir):
    engine = ImprintingEngine.from_extractor(model_file(EXTRACTOR), max_shots=1)
    with pytest.warns(UserWarning, match="max_shots=1"):
        _imprint_cdh(engine, images_dir)
    assert [engine.shots(i) for i in range(3)] == [1, 1, 1]
    engine.remove_class(1)
    assert engine.labels == ["cat", "hotdog"] and engine.num_classes == 2
    model = load_model(engine.serialize_model())
    assert list(model.subgraphs[0].tensors[model.subgraphs[0].outputs[0]].shape) == [1, 2]
    reopened = ImprintingEngine(model_to_bytes(model), keep_classes=True)
    assert reopened.labels == ["cat", "hotdog"]
    with pytest.raises(TrainingError, match="does not exist"):
        engine.remove_class(5)


def test_finetune_keeps_structure_and_is_stable_at_one_shot(model_file, images_dir):
    engine = ImprintingEngine.from_extractor(model_file(EXTRACTOR))
    extractor = _imprint_cdh(engine, images_dir)
    before = engine.class_rows()
    losses = engine.finetune(steps=300)
    assert losses[-1] <= losses[0] and np.isfinite(losses).all()
    np.testing.assert_allclose(np.linalg.norm(engine.class_rows(), axis=1), 1.0, rtol=1e-5)
    assert np.min(np.sum(before * engine.class_rows(), axis=1)) > 0.9  # rows stay near their imprints
    classifier = Interpreter(engine.serialize_model())
    for class_id, name in enumerate(CDH):
        assert classifier.run_file(images_dir / "imprinting" / f"{name}_test_0.bmp").argmax() == class_id
    assert extractor is not None


def test_keep_classes_of_a_plain_classifier_is_refused_with_the_reason(model_file):
    with pytest.raises(ModelError, match="not a cosine classifier"):
        ImprintingEngine.from_extractor(model_file("mobilenet_v1_0.25_128_quant.tflite"), keep_classes=True)
    with pytest.raises(ModelError, match="no classes to keep"):
        ImprintingEngine.from_extractor(model_file(EXTRACTOR), keep_classes=True)


def test_keep_classes_of_a_cosine_classifier_keeps_its_predictions(model_file, images_dir):
    classifier = make_cosine_classifier(load_model(model_file("mobilenet_v1_0.25_128_quant.tflite")))
    original = Interpreter(classifier)
    engine = ImprintingEngine.from_extractor(classifier, keep_classes=True)
    assert engine.num_classes == 1001 and not engine.is_trainable(0)
    extractor = Interpreter(engine.serialize_extractor_model())
    engine.train(extractor.run_file(images_dir / "imprinting" / "hotdog_train_0.bmp"), 1001)
    kept = Interpreter(engine.serialize_model())
    rows = engine.class_rows()[:1001]
    for name in ("cat.bmp", "parrot.jpg", "dragonfly.bmp"):
        # Among the kept classes the ranking is the original one: equal norms and no bias make logits ~ cos.
        cosine = rows @ extractor.run_file(images_dir / name)
        assert original.run_file(images_dir / name).argmax() in np.argsort(-cosine)[:3]
    assert kept.run_file(images_dir / "imprinting" / "hotdog_test_0.bmp").argmax() == 1001
    with pytest.raises(TrainingError, match="Cannot change the base model classes"):
        engine.train(np.ones(256) / 16, 3)


def test_edgetpu_extractor_gets_the_structure_after_the_custom_op(model_file):
    engine = ImprintingEngine.from_extractor(model_file(EXTRACTOR_EDGETPU))
    engine.train(np.ones(1024) / 32, 0)
    names = [op.name for op in inspect_model(engine.serialize_model()).main.operators]
    assert names == ["edgetpu-custom-op", "L2_NORMALIZATION", "CONV_2D", "MUL", "RESHAPE", "SOFTMAX"]


def test_cli_imprint_resume_and_classify(capsys, tmp_path, images_dir):
    data = tmp_path / "cdh"
    for name in CDH:
        (data / name).mkdir(parents=True)
        for path in (images_dir / "imprinting").glob(f"{name}_*.bmp"):
            (data / name / path.name).write_bytes(path.read_bytes())
    first = tmp_path / "first"
    assert main(["imprint", str(data), "-o", str(first), "--test-ratio", "0.34", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    report = json.loads((first / "report.json").read_text())
    assert summary["classes"] == 3 and report["test_images"] == 3 and report["test_accuracy"] == 1.0
    more = tmp_path / "more" / "owl"
    more.mkdir(parents=True)
    (more / "owl.jpg").write_bytes((images_dir / "owl.jpg").read_bytes())
    second = tmp_path / "second"
    assert main(["imprint", "--resume", str(first / "model.tflite"), str(more.parent), "-o", str(second),
                 "--test-ratio", "0", "--json"]) == 0
    capsys.readouterr()
    assert (second / "labels.txt").read_text() == "0 cat\n1 dog\n2 hotdog\n3 owl\n"
    assert main(["classify", "-m", str(second / "model.tflite"), str(images_dir / "owl.jpg"),
                 str(images_dir / "imprinting" / "dog_test_0.bmp"), "-k", "1", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert [r["classes"][0]["label"] for r in results] == ["owl", "dog"]
