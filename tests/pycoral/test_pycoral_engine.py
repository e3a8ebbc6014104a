"""lastlayer.pycoral.learn.imprinting.engine: PyCoral's ImprintingEngine surface, rules and messages."""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from PIL import Image

from lastlayer.learn.imprinting import ImprintingHead
from lastlayer.model import imprinting as structure
from lastlayer.model.edit import add_operator, add_tensor, quantization
from lastlayer.model.export import write_head
from lastlayer.model.file import ModelFile
from lastlayer.model.io import model_to_bytes
from lastlayer.model.names import as_text
from lastlayer.model.view import inspect_model
from lastlayer.pycoral.adapters import classify, common
from lastlayer.pycoral.learn.imprinting.engine import ImprintingEngine
from lastlayer.pycoral.utils.edgetpu import make_interpreter
from lastlayer.quantization import quantize

from conftest import EXTRACTOR, EXTRACTOR_EDGETPU
from graphs import float_extractor, make_cosine_classifier

CDH = ("cat", "dog", "hotdog")


def coral_model(path, base_rows: np.ndarray | None = None, trained: np.ndarray | None = None, scale: float = 48.0) -> bytes:
    """A Coral-structured imprinting model (what Coral's *_l2norm_quant models look like), written by lastlayer."""
    head = ImprintingHead(scale=scale, normalize_examples=False)
    if base_rows is not None:
        head.add_base_classes(base_rows, [f"base{i}" for i in range(len(base_rows))])
    for row in trained if trained is not None else []:
        head.add(row, head.num_classes)
    return write_head(ModelFile.read(path), head.export())


def embed(interpreter, path) -> np.ndarray:
    image = Image.open(path).convert("RGB").resize(common.input_size(interpreter), Image.BILINEAR)
    common.set_input(interpreter, image)
    interpreter.invoke()
    return classify.get_scores(interpreter)


def imprint_cdh(engine: ImprintingEngine, images_dir, first_id: int = 0):
    extractor = make_interpreter(engine.serialize_extractor_model())
    extractor.allocate_tensors()
    for offset, name in enumerate(CDH):
        for path in sorted((images_dir / "imprinting").glob(f"{name}_train_*.bmp")):
            engine.train(embed(extractor, path), first_id + offset)
    return extractor


def classify_cdh(model_bytes: bytes, images_dir) -> list[int]:
    interpreter = make_interpreter(model_bytes)
    interpreter.allocate_tensors()
    result = []
    for name in CDH:
        embed(interpreter, images_dir / "imprinting" / f"{name}_test_0.bmp")
        result.append(int(classify.get_classes(interpreter, top_k=1)[0].id))
    return result


def test_failed_to_open_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="^Failed to open file: .*missing.tflite"):
        ImprintingEngine(str(tmp_path / "missing.tflite"))
    (tmp_path / "junk.tflite").write_bytes(b"junk" * 10)
    with pytest.raises(ValueError, match="^Failed to open file: .*junk.tflite"):
        ImprintingEngine(str(tmp_path / "junk.tflite"))


def _insert_before(tree, position: int, code: int, inputs: list[int], outputs: list[int], options_type: int = 0,
                   options: object = None) -> None:
    """Add an operator and move it to ``position`` in the execution order."""
    add_operator(tree, code, inputs, outputs, options_type=options_type, options=options)
    ops = tree.subgraphs[0].operators
    ops.insert(position, ops.pop())


def _reshape_options(shape: list[int]) -> schema.ReshapeOptionsT:
    options = schema.ReshapeOptionsT()
    options.newShape = shape
    return options


def _damaged(model_file, damage: str) -> bytes:
    """A well-formed model that breaks one of PyCoral's imprinting rules."""
    tree = ModelFile.from_bytes(coral_model(model_file(EXTRACTOR), trained=np.eye(1024)[:2])).copy_tree()
    graph = tree.subgraphs[0]
    ops = graph.operators
    l2_op, conv_op = len(ops) - 5, len(ops) - 4
    l2_out = ops[l2_op].outputs[0]
    embedding = graph.tensors[l2_out]
    quant = quantization(embedding.quantization.scale[0], embedding.quantization.zeroPoint[0])
    B = schema.BuiltinOperator
    if damage == "no_l2":  # two outputs: neither an extractor nor a classifier, and no L2Norm
        tree = ModelFile.read(model_file(EXTRACTOR)).copy_tree()
        graph = tree.subgraphs[0]
        graph.outputs = [graph.outputs[0], graph.operators[-1].inputs[0]]
    elif damage == "two_l2":  # L2Norm -> L2Norm -> Conv
        first = add_tensor(tree, "first_l2", [1, 1, 1, 1024], np.uint8, quant=quant)
        ops[l2_op].outputs = [first]
        _insert_before(tree, conv_op, B.L2_NORMALIZATION, [first], [l2_out], schema.BuiltinOptions.L2NormOptions,
                       schema.L2NormOptionsT())
    elif damage == "gap":  # L2Norm -> Reshape -> Conv
        moved = add_tensor(tree, "moved", [1, 1, 1, 1024], np.uint8, quant=quant)
        shape = add_tensor(tree, "moved_shape", [4], np.int32, data=np.array([1, 1, 1, 1024], np.int32))
        ops[conv_op].inputs = [moved, *ops[conv_op].inputs[1:]]
        _insert_before(tree, conv_op, B.RESHAPE, [l2_out, shape], [moved], schema.BuiltinOptions.ReshapeOptions,
                       _reshape_options([1, 1, 1, 1024]))
    elif damage == "swap_tail":  # a Reshape after the Softmax
        probs = graph.outputs[0]
        out = add_tensor(tree, "after_softmax", [1, 2], np.uint8, quant=quantization(1 / 256, 0))
        shape = add_tensor(tree, "after_softmax_shape", [2], np.int32, data=np.array([1, 2], np.int32))
        add_operator(tree, B.RESHAPE, [probs, shape], [out], options_type=schema.BuiltinOptions.ReshapeOptions,
                     options=_reshape_options([1, 2]))
        graph.outputs = [out]
    elif damage == "flat_embedding":
        embedding.shape = [1, 1, 2, 512]
    elif damage == "bias_zero_point":
        graph.tensors[ops[conv_op].inputs[2]].quantization.zeroPoint = [300]
    elif damage == "logit_shape":
        graph.tensors[ops[-1].outputs[0]].shape = [2, 1]
    elif damage == "extra_output":
        graph.outputs = list(graph.outputs) + [ops[-3].outputs[0]]
    return model_to_bytes(tree)


@pytest.mark.parametrize(
    ("damage", "message"),
    [("no_l2", "Unsupported model architecture. Input model must have an L2Norm layer."),
     ("two_l2", "exactly one L2Norm layer"),
     ("swap_tail", "The last 4 operators must be Conv2d, Mul, Reshape, Softmax"),
     ("gap", "Unsupported model architecture. L2Norm operator must be followed with the last Conv2d operator."),
     ("flat_embedding", "Embedding extractor's output tensor should be [1, 1, 1, x]"),
     ("bias_zero_point", "bias_zero_point is out of [0, 255] range!"),
     ("logit_shape", "Logit output tensor should be [1, x]"),
     ("extra_output", "Graph must have output from Softmax")],
)
def test_validation_rules_raise_pycoral_messages_as_value_errors(model_file, damage, message):
    with pytest.raises(ValueError) as info:
        ImprintingEngine(_damaged(model_file, damage))
    assert message in str(info.value)


def test_train_rules_messages_and_exception_types(model_file):
    engine = ImprintingEngine(coral_model(model_file(EXTRACTOR), base_rows=np.eye(1024)[:2], trained=np.eye(1024)[2:3]),
                              keep_classes=True)
    assert engine.embedding_dim == 1024 and engine.num_classes == 3
    cases = [
        (np.ones(1023), 3, "Invalid weights array shape."),
        (np.ones((1, 1024)), 3, "Invalid weights array shape."),
        (np.ones(1024), 0, "Cannot change the base model classes not trained with imprinting method!"),
        (np.ones(1024), 4, "The class index of a new category is too large!"),
        (np.ones(1024), -1, "class id -1 is negative"),
        (np.ones(1024, dtype=np.uint8), 3, "dequantize them first"),
        (np.ones(1024), 2.5, "is not an integer"),
    ]
    for embedding, class_id, message in cases:
        with pytest.raises(RuntimeError) as info:
            engine.train(embedding, class_id)
        assert message in str(info.value)
    assert engine.num_classes == 3
    engine.train(np.ones(1024, dtype=np.float64), 2)  # float64 (get_scores' type) retrains an imprinted class
    engine.train(np.ones(1024, dtype=np.float32), np.int64(3))
    assert engine.num_classes == 4
    with pytest.raises(RuntimeError, match="^Model is not trained.$"):
        ImprintingEngine(str(model_file(EXTRACTOR))).serialize_model()


def test_keep_classes_false_starts_empty_and_true_keeps_base_rows_fixed(model_file):
    base = np.zeros((2, 1024))
    base[0, 0], base[1, 1] = 2.0, 0.5  # base rows that are not unit norm get re-normalised, as in PyCoral
    model = coral_model(model_file(EXTRACTOR), base_rows=base, trained=np.eye(1024)[5:6] * 3)
    assert ImprintingEngine(model).num_classes == 0
    engine = ImprintingEngine(model, keep_classes=True)
    assert engine.num_classes == 3
    engine.train(np.eye(1024)[7], 3)
    saved = ModelFile.from_bytes(engine.serialize_model())
    # PyCoral's lossy resume: the norm comes back as norm x |dequantized unit row| (255 -> 127/128)
    assert as_text(saved.tree.description) == f"2 {3 * 127 / 128:f}\n3 1.000000\n"
    rows = structure.class_rows(saved.tree, structure.validate(saved.tree))
    np.testing.assert_allclose(rows[:, :8], np.eye(8)[[0, 1, 5, 7]], atol=1 / 128)


def test_extractor_model_feeds_train_and_cat_dog_hotdog_are_learned(model_file, images_dir):
    engine = ImprintingEngine(coral_model(model_file(EXTRACTOR), trained=np.eye(1024)[:1]))
    extractor = imprint_cdh(engine, images_dir)
    assert [op.name for op in inspect_model(engine.serialize_extractor_model()).main.operators][-1] == "L2_NORMALIZATION"
    embedding = embed(extractor, images_dir / "imprinting" / "cat_test_0.bmp")
    assert embedding.shape == (1024,) and np.linalg.norm(embedding) == pytest.approx(1.0, abs=0.03)
    assert engine.num_classes == 3
    assert classify_cdh(engine.serialize_model(), images_dir) == [0, 1, 2]


def test_resume_keeps_classes_and_equals_training_at_once(model_file, images_dir, tmp_path):
    rng = np.random.default_rng(0)
    a, b, c = (unit for unit in rng.normal(size=(3, 1024)))
    together = ImprintingEngine(str(model_file(EXTRACTOR)))
    for embedding, class_id in ((a, 0), (b, 1), (c, 1)):
        together.train(embedding / np.linalg.norm(embedding), class_id)
    first = ImprintingEngine(str(model_file(EXTRACTOR)))
    first.train(a / np.linalg.norm(a), 0)
    first.train(b / np.linalg.norm(b), 1)
    path = tmp_path / "first.tflite"
    path.write_bytes(first.serialize_model())
    resumed = ImprintingEngine(str(path), keep_classes=True)
    assert resumed.num_classes == 2
    resumed.train(c / np.linalg.norm(c), 1)
    kernels = []
    for engine in (resumed, together):
        tree = ModelFile.from_bytes(engine.serialize_model()).tree
        info = structure.validate(tree)
        kernels.append(quantize(structure.class_rows(tree, info), info.kernel_scale, info.kernel_zero_point).astype(int))
    assert np.abs(kernels[0] - kernels[1]).max() <= 1
    with pytest.raises(RuntimeError, match="too large"):
        resumed.train(a, 3)


def test_models_written_by_pycoral_resume_from_the_description(model_file):
    engine = ImprintingEngine(str(model_file(EXTRACTOR)))
    engine.train(np.eye(1024)[0] * 3, 0)
    engine.train(np.eye(1024)[1] * 4, 0)
    tree = ModelFile.from_bytes(engine.serialize_model()).copy_tree()
    tree.metadata = [m for m in tree.metadata or [] if as_text(m.name) not in ("lastlayer_imprinting", "labels")]
    assert as_text(tree.description) == "0 5.000000\n"
    resumed = ImprintingEngine(model_to_bytes(tree), keep_classes=True)
    resumed.train(np.eye(1024)[0] * 5, 0)
    resumed_tree = ModelFile.from_bytes(resumed.serialize_model()).tree
    assert as_text(resumed_tree.description).startswith("0 ") and float(as_text(resumed_tree.description).split()[1]) \
        == pytest.approx(np.linalg.norm([8, 4]), rel=2e-2)


def test_extension_any_extractor_builds_coral_structure(model_file):
    engine = ImprintingEngine(str(model_file(EXTRACTOR_EDGETPU)))
    engine.train(np.ones(1024) / 32, 0)
    names = [op.name for op in inspect_model(engine.serialize_model()).main.operators]
    assert names == ["edgetpu-custom-op", "L2_NORMALIZATION", "CONV_2D", "MUL", "RESHAPE", "SOFTMAX"]
    tiny = ImprintingEngine(model_to_bytes(float_extractor(features=4)))
    tiny.train(np.array([1.0, 0.0, 0.0, 0.0]), 0)
    names = [op.name for op in inspect_model(tiny.serialize_model()).main.operators][-6:]
    assert names == ["L2_NORMALIZATION", "QUANTIZE", "CONV_2D", "MUL", "RESHAPE", "SOFTMAX"]


def test_keep_classes_needs_classes(model_file):
    with pytest.raises(ValueError, match="no classes to keep"):
        ImprintingEngine(str(model_file(EXTRACTOR)), keep_classes=True)
    assert ImprintingEngine(str(model_file("mobilenet_v1_0.25_128_quant.tflite"))).num_classes == 0


def test_keep_classes_of_an_ordinary_classifier_appends_after_its_classes_and_resumes(model_file, images_dir, tmp_path):
    path = model_file("mobilenet_v1_0.25_128_quant.tflite")
    original = ModelFile.read(path)
    engine = ImprintingEngine(str(path), keep_classes=True)
    assert engine.num_classes == 1001 and engine.embedding_dim == 256
    assert engine.serialize_model() == original.data  # nothing taught: the classifier as it was
    extractor = make_interpreter(engine.serialize_extractor_model())
    extractor.allocate_tensors()
    assert [op.name for op in inspect_model(engine.serialize_extractor_model()).main.operators][-1] == "AVERAGE_POOL_2D"
    with pytest.raises(RuntimeError, match="Cannot change the base model classes"):
        engine.train(embed(extractor, images_dir / "imprinting" / "hotdog_train_0.bmp"), 934)
    with pytest.raises(RuntimeError, match="too large"):
        engine.train(embed(extractor, images_dir / "imprinting" / "hotdog_train_0.bmp"), 1002)
    for name in ("hotdog_train_0.bmp", "hotdog_train_1.bmp"):
        engine.train(embed(extractor, images_dir / "imprinting" / name), 1001)
    kept = tmp_path / "kept.tflite"
    kept.write_bytes(engine.serialize_model())
    interpreter = make_interpreter(str(kept))
    interpreter.allocate_tensors()
    embed(interpreter, images_dir / "imprinting" / "hotdog_test_0.bmp")
    assert classify.num_classes(interpreter) == 1002 and int(classify.get_classes(interpreter, top_k=1)[0].id) == 1001
    resumed = ImprintingEngine(str(kept), keep_classes=True)  # the appended class stays trainable, the others fixed
    assert resumed.num_classes == 1002
    resumed.train(embed(extractor, images_dir / "imprinting" / "cat_train_0.bmp"), 1002)
    resumed.train(embed(extractor, images_dir / "imprinting" / "dog_train_0.bmp"), 1001)
    with pytest.raises(RuntimeError, match="Cannot change the base model classes"):
        resumed.train(embed(extractor, images_dir / "imprinting" / "dog_train_0.bmp"), 1000)
    assert classify.num_classes(_allocated(resumed.serialize_model())) == 1003
    assert ImprintingEngine(str(kept)).num_classes == 0  # without keep_classes: a new imprinting model on its extractor


def _allocated(model_bytes: bytes):
    interpreter = make_interpreter(model_bytes)
    interpreter.allocate_tensors()
    return interpreter


def test_keep_classes_of_a_cosine_classifier_adds_after_its_classes(model_file, images_dir):
    cosine = model_to_bytes(make_cosine_classifier(ModelFile.read(model_file("mobilenet_v1_0.25_128_quant.tflite")).copy_tree()))
    engine = ImprintingEngine(cosine, keep_classes=True)
    assert engine.num_classes == 1001 and engine.embedding_dim == 256
    extractor = make_interpreter(engine.serialize_extractor_model())
    extractor.allocate_tensors()
    engine.train(embed(extractor, images_dir / "imprinting" / "hotdog_train_0.bmp"), 1001)
    with pytest.raises(RuntimeError, match="Cannot change the base model classes"):
        engine.train(embed(extractor, images_dir / "imprinting" / "hotdog_train_1.bmp"), 3)
    kept = make_interpreter(engine.serialize_model())
    kept.allocate_tensors()
    embed(kept, images_dir / "imprinting" / "hotdog_test_0.bmp")
    assert classify.num_classes(kept) == 1002 and int(classify.get_classes(kept, top_k=1)[0].id) == 1001
