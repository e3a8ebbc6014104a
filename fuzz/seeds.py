"""Seed models besides the shared ones: float networks and the models lastlayer itself writes.

Every seed is built by code from the shared models with the library's own graph editing (never
stored as bytes): a float MobileNet (the shared uint8 one with dequantized weights), a small float
MobileNetV3-style network taking NCHW input (TRANSPOSE, PAD, HARD_SWISH, a squeeze-excite block with
MEAN, LOGISTIC and MUL, a residual ADD, CONCATENATION, FULLY_CONNECTED, SOFTMAX), and heads written by
``lastlayer.model.export.write_head`` as ``train`` and ``imprint`` write them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

import numpy as np
from ai_edge_litert import schema_py_generated as schema

if __package__ in (None, ""):  # run as a script: make ``fuzz`` and ``tests`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fuzz.mutate import pack, parse  # noqa: E402

EXTRACTOR = "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
V1_SMALL = "mobilenet_v1_0.25_128_quant.tflite"
_B = schema.BuiltinOperator
_O = schema.BuiltinOptions


def float_mobilenet(models_dir: Path, name: str = V1_SMALL) -> schema.ModelT:
    """The shared uint8 MobileNet as a float32 network with the same (dequantized) weights."""
    from tests.graphs import float_weights

    return float_weights(parse((models_dir / name).read_bytes()))


def _conv(stride: int = 1, padding: int = schema.Padding.SAME, activation: int = 0) -> schema.Conv2DOptionsT:
    options = schema.Conv2DOptionsT()
    options.padding, options.strideW, options.strideH, options.fusedActivationFunction = padding, stride, stride, activation
    return options


def float_v3_classifier(classes: int = 10, seed: int = 0) -> schema.ModelT:
    """A small float MobileNetV3-style classifier taking ``[1, 3, 16, 16]`` (channels first)."""
    from lastlayer.model.edit import add_operator, add_tensor, new_model, set_io

    rng = np.random.default_rng(seed)
    model = new_model("fuzz seed: float MobileNetV3-style classifier")

    def const(name: str, values: np.ndarray, dtype: type = np.float32) -> int:
        return add_tensor(model, name, values.shape, dtype, data=values)

    def act(name: str, shape: list[int]) -> int:
        return add_tensor(model, name, shape, np.float32)

    image = act("image", [1, 3, 16, 16])
    nhwc = act("nhwc", [1, 16, 16, 3])
    add_operator(model, _B.TRANSPOSE, [image, const("perm", np.array([0, 2, 3, 1]), np.int32)], [nhwc],
                 options_type=_O.TransposeOptions, options=schema.TransposeOptionsT())
    padded = act("padded", [1, 18, 18, 3])
    add_operator(model, _B.PAD, [nhwc, const("paddings", np.array([[0, 0], [1, 1], [1, 1], [0, 0]]), np.int32)], [padded],
                 options_type=_O.PadOptions, options=schema.PadOptionsT())
    stem = act("stem", [1, 8, 8, 8])
    add_operator(model, _B.CONV_2D, [padded, const("stem/w", rng.normal(size=(8, 3, 3, 3)) * 0.3), const("stem/b", np.zeros(8))],
                 [stem], options_type=_O.Conv2DOptions,
                 options=_conv(2, schema.Padding.VALID, schema.ActivationFunctionType.RELU6))
    swish = act("hard_swish", [1, 8, 8, 8])
    add_operator(model, _B.HARD_SWISH, [stem], [swish])
    depthwise = act("depthwise", [1, 8, 8, 8])
    dw = schema.DepthwiseConv2DOptionsT()
    dw.padding, dw.strideW, dw.strideH, dw.depthMultiplier = schema.Padding.SAME, 1, 1, 1
    add_operator(model, _B.DEPTHWISE_CONV_2D, [swish, const("dw/w", rng.normal(size=(1, 3, 3, 8)) * 0.3),
                                               const("dw/b", np.zeros(8))], [depthwise], options_type=_O.DepthwiseConv2DOptions, options=dw)
    squeezed = act("se/mean", [1, 1, 1, 8])
    reducer = schema.ReducerOptionsT()
    reducer.keepDims = True
    add_operator(model, _B.MEAN, [depthwise, const("se/axes", np.array([1, 2]), np.int32)], [squeezed],
                 options_type=_O.ReducerOptions, options=reducer)
    reduced = act("se/reduce", [1, 1, 1, 4])
    add_operator(model, _B.CONV_2D, [squeezed, const("se/w1", rng.normal(size=(4, 1, 1, 8))), const("se/b1", np.zeros(4))], [reduced],
                 options_type=_O.Conv2DOptions, options=_conv(activation=schema.ActivationFunctionType.RELU))
    expanded = act("se/expand", [1, 1, 1, 8])
    add_operator(model, _B.CONV_2D, [reduced, const("se/w2", rng.normal(size=(8, 1, 1, 4))), const("se/b2", np.zeros(8))], [expanded],
                 options_type=_O.Conv2DOptions, options=_conv())
    gate = act("se/gate", [1, 1, 1, 8])
    add_operator(model, _B.LOGISTIC, [expanded], [gate])
    excited = act("se/mul", [1, 8, 8, 8])
    add_operator(model, _B.MUL, [depthwise, gate], [excited], options_type=_O.MulOptions, options=schema.MulOptionsT())
    residual = act("residual", [1, 8, 8, 8])
    add_operator(model, _B.ADD, [excited, swish], [residual], options_type=_O.AddOptions, options=schema.AddOptionsT())
    joined = act("concat", [1, 8, 8, 16])
    concat = schema.ConcatenationOptionsT()
    concat.axis = 3
    add_operator(model, _B.CONCATENATION, [residual, stem], [joined], options_type=_O.ConcatenationOptions, options=concat)
    pooled = act("pool", [1, 1, 1, 16])
    pool = schema.Pool2DOptionsT()
    pool.padding, pool.strideW, pool.strideH, pool.filterWidth, pool.filterHeight = schema.Padding.VALID, 1, 1, 8, 8
    add_operator(model, _B.AVERAGE_POOL_2D, [joined], [pooled], options_type=_O.Pool2DOptions, options=pool)
    flat = act("flat", [1, 16])
    add_operator(model, _B.RESHAPE, [pooled, const("flat/shape", np.array([1, 16]), np.int32)], [flat],
                 options_type=_O.ReshapeOptions, options=schema.ReshapeOptionsT())
    logits = act("logits", [1, classes])
    add_operator(model, _B.FULLY_CONNECTED, [flat, const("fc/w", rng.normal(size=(classes, 16))), const("fc/b", np.zeros(classes))],
                 [logits], options_type=_O.FullyConnectedOptions, options=schema.FullyConnectedOptionsT())
    probs = act("probs", [1, classes])
    softmax = schema.SoftmaxOptionsT()
    softmax.beta = 1.0
    add_operator(model, _B.SOFTMAX, [logits], [probs], options_type=_O.SoftmaxOptions, options=softmax)
    set_io(model, [image], [probs])
    return model


def written_head(base: bytes, output_type: str, *, imprint: bool = False, classes: int = 4, seed: int = 0) -> bytes:
    """What ``train`` (dense head) or ``imprint`` (Coral's imprinting structure) writes on ``base``."""
    from lastlayer.layer import DenseLayer
    from lastlayer.model.export import extractor_model, write_head
    from lastlayer.model.file import ModelFile

    model = ModelFile.from_bytes(base, "fuzz seed base")
    dim = int(extractor_model(model).tree.subgraphs[0].tensors[extractor_model(model).tree.subgraphs[0].outputs[0]].shape[-1])
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(classes, dim)).astype(np.float32)
    if imprint:
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        layer = DenseLayer(rows, np.zeros(classes, np.float32), scale=48.0, normalize_input=True, logit_range=(-48.0, 48.0),
                           labels=[f"class{i}" for i in range(classes)])
    else:
        layer = DenseLayer(rows * 0.05, rng.normal(size=classes).astype(np.float32) * 0.1, logit_range=(-6.0, 6.0),
                           labels=[f"class{i}" for i in range(classes)])
    return write_head(model, layer, output_type=output_type)


def float_extractor(models_dir: Path) -> bytes:
    """The float MobileNet cut at its embedding: a float extractor, as ``lastlayer cut`` writes it."""
    from lastlayer.model.surgery import cut_at_embedding

    tree, _ = cut_at_embedding(float_mobilenet(models_dir), None, "float MobileNet")
    return pack(tree)


SEEDS: dict[str, Callable[[Path], bytes]] = {
    "float:mobilenet_v1_0.25_128.tflite": lambda d: pack(float_mobilenet(d)),
    "float:v3_block_nchw.tflite": lambda d: pack(float_v3_classifier()),
    "written:train_float32_on_uint8_extractor.tflite": lambda d: written_head((d / EXTRACTOR).read_bytes(), "float32"),
    "written:imprint_uint8.tflite": lambda d: written_head((d / EXTRACTOR).read_bytes(), "uint8", imprint=True),
    "written:imprint_int8.tflite": lambda d: written_head((d / EXTRACTOR).read_bytes(), "int8", imprint=True),
    "written:train_float32_on_float_extractor.tflite": lambda d: written_head(float_extractor(d), "float32"),
}


def seed_models(models_dir: Path) -> dict[str, bytes]:
    """Every extra seed, by name, built from the shared models in ``models_dir``."""
    return {name: build(models_dir) for name, build in SEEDS.items()}
