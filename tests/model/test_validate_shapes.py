"""Declared shapes against what the operators compute, checked against LiteRT itself."""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert import interpreter as litert
from ai_edge_litert import schema_py_generated as schema

from lastlayer.model.edit import add_operator, add_tensor, new_model, set_io
from lastlayer.model.io import model_to_bytes
from lastlayer.model.validate import derived_shapes
from model.validation_cases import accepts, edited, ops, rejects, tree, write

from conftest import CPU_MODELS

B = schema.BuiltinOperator
OPTIONS = schema.BuiltinOptions
SMALL = "mobilenet_v1_0.25_128_quant.tflite"
V2 = "mobilenet_v2_1.0_224_quant.tflite"
HEAD = "mobilenet_quant_v1_224_head_layers.tflite"
FLOAT_V1 = "float:mobilenet_v1_0.25_128.tflite"
SEEDS = [FLOAT_V1, "float:v3_block_nchw.tflite", "written:imprint_uint8.tflite", "written:train_float32_on_float_extractor.tflite"]


def litert_shapes(model: schema.ModelT) -> dict[int, list[int]]:
    """The shape LiteRT gives each tensor once it has prepared the model (no delegate)."""
    interpreter = litert.Interpreter(model_content=model_to_bytes(model),
                                     experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    return {d["index"]: [int(x) for x in d["shape"]] for d in interpreter.get_tensor_details()}


@pytest.mark.parametrize("name", CPU_MODELS + SEEDS)
def test_derived_shapes_are_litert_s(name):
    model = tree(name)
    ours = derived_shapes(model)
    for index, shape in litert_shapes(model).items():
        if index < len(ours):  # (LiteRT adds its kernels' scratch tensors after the model's)
            assert ours[index] == shape, (index, model.subgraphs[0].tensors[index].name)


@pytest.mark.parametrize("batch", [46341, 131071])
def test_intermediate_batch_that_no_operator_computes(batch, tmp_path):
    def edit(model):  # XNNPACK allocated 2.2 GB (46,341) and 6.2 GB (131,071) from the declared shape
        tensor = model.subgraphs[0].tensors[ops(model, "AVERAGE_POOL_2D")[0].inputs[0]]
        tensor.shape = [batch, 4, 4, 256]

    rejects(edited(FLOAT_V1, edit, tmp_path), f"is declared [{batch}, 4, 4, 256] but CONV_2D computes [1, 4, 4, 256] from its inputs")


def test_input_enlarged_to_46341_by_224(tmp_path):
    def edit(model):
        graph = model.subgraphs[0]
        graph.tensors[graph.inputs[0]].shape = [1, 46341, 224, 3]

    rejects(edited(V2, edit, tmp_path), "(CONV_2D): output 0", "is declared [1, 112, 112, 32] but CONV_2D computes [1, 23171, 112, 32]")


def test_head_graph_with_a_362x362x1024_input(tmp_path):
    def edit(model):
        graph = model.subgraphs[0]
        graph.tensors[graph.inputs[0]].shape = [1, 362, 362, 1024]

    rejects(edited(HEAD, edit, tmp_path), "is declared [1, 1, 1, 1001] but CONV_2D computes [1, 362, 362, 1001]")


def test_another_layout_of_the_same_size_is_re_derived(tmp_path):
    """LiteRT re-derives shapes when it prepares a model: a declared [1, 1, 2, 512] for a computed [1, 1, 1, 1024]
    allocates the same bytes, so it is accepted, and later operators see the derived shape."""
    model = tree("written:imprint_uint8.tflite")
    l2_out = ops(model, "CONV_2D")[-1].inputs[0]
    model.subgraphs[0].tensors[l2_out].shape = [1, 1, 2, 512]
    accepts(model, tmp_path)
    assert derived_shapes(model)[l2_out] == litert_shapes(model)[l2_out] == [1, 1, 1, 1024]
    model.subgraphs[0].tensors[l2_out].shape = [1, 1, 1, 1023]
    rejects(write(model, tmp_path), "is declared [1, 1, 1, 1023] but L2_NORMALIZATION computes [1, 1, 1, 1024]")


# ---------------------------------------------------------------------------------- one operator at a time
def _graph(code: int, shapes: list[list[int]], constants: dict[int, np.ndarray], outputs: list[list[int]],
           options_type: int = 0, options: object = None, dtype: type = np.float32) -> schema.ModelT:
    """One operator on float inputs (``constants``: inputs given by value), declaring ``outputs``."""
    model = new_model("test: one operator")
    ins, graph_in = [], []
    for position, shape in enumerate(shapes):
        if position in constants:
            values = constants[position]
            ins.append(add_tensor(model, f"c{position}", list(values.shape), values.dtype, data=values))
        else:
            ins.append(add_tensor(model, f"x{position}", shape, dtype))
            graph_in.append(ins[-1])
    outs = [add_tensor(model, f"y{i}", shape, dtype) for i, shape in enumerate(outputs)]
    add_operator(model, code, ins, outs, options_type=options_type, options=options)
    set_io(model, graph_in, outs)
    return model


def _options(kind: str, **fields) -> tuple[int, object]:
    options = getattr(schema, f"{kind}T")()
    for key, value in fields.items():
        setattr(options, key, value)
    return getattr(OPTIONS, kind), options


def _op(model: schema.ModelT, code: int, ins: list[int], outs: list[int], options_type: int, options: object) -> None:
    add_operator(model, code, ins, outs, options_type=options_type, options=options)


i32 = np.int32
CASES = {
    "broadcast ADD": (B.ADD, [[1, 4, 4, 3], [1, 1, 1, 3]], {}, [[1, 4, 4, 3]], ()),
    "broadcast MUL on ranks 3 and 1": (B.MUL, [[2, 1, 5], [5]], {}, [[2, 1, 5]], ()),
    "STRIDED_SLICE with masks": (B.STRIDED_SLICE, [[4, 6, 8], [3], [3], [3]],
                                 {1: np.array([1, -5, 0], i32), 2: np.array([3, -1, 0], i32), 3: np.array([1, 2, 1], i32)},
                                 [[2, 2]], _options("StridedSliceOptions", endMask=4, shrinkAxisMask=4)),
    "STRIDED_SLICE backwards": (B.STRIDED_SLICE, [[10], [1], [1], [1]],
                                {1: np.array([-1], i32), 2: np.array([0], i32), 3: np.array([-3], i32)}, [[3]],
                                _options("StridedSliceOptions")),
    "TRANSPOSE": (B.TRANSPOSE, [[1, 3, 8, 6], [4]], {1: np.array([0, 2, 3, 1], i32)}, [[1, 8, 6, 3]], _options("TransposeOptions")),
    "CONCATENATION on axis -1": (B.CONCATENATION, [[1, 2, 2, 3], [1, 2, 2, 5]], {}, [[1, 2, 2, 8]],
                                 _options("ConcatenationOptions", axis=-1)),
    "PACK": (B.PACK, [[2, 3], [2, 3]], {}, [[2, 2, 3]], _options("PackOptions", valuesCount=2, axis=1)),
    "SPLIT_V": (B.SPLIT_V, [[1, 10], [3], []], {1: np.array([2, -1, 3], i32), 2: np.array(1, i32)}, [[1, 2], [1, 5], [1, 3]],
                _options("SplitVOptions", numSplits=3)),
    "SLICE to the end": (B.SLICE, [[3, 5], [2], [2]], {1: np.array([1, 2], i32), 2: np.array([-1, 2], i32)}, [[2, 2]],
                         _options("SliceOptions")),
    "MIRROR_PAD": (B.MIRROR_PAD, [[1, 4, 4, 2], [4, 2]], {1: np.array([[0, 0], [1, 2], [2, 1], [0, 0]], i32)}, [[1, 7, 7, 2]],
                   _options("MirrorPadOptions")),
    "MEAN without keep_dims": (B.MEAN, [[1, 5, 5, 8], [2]], {1: np.array([1, -2], i32)}, [[1, 8]], _options("ReducerOptions")),
    "SQUEEZE all ones": (B.SQUEEZE, [[1, 1, 1, 7]], {}, [[7]], _options("SqueezeOptions")),
    "EXPAND_DIMS at -1": (B.EXPAND_DIMS, [[2, 3], []], {1: np.array(-1, i32)}, [[2, 3, 1]], _options("ExpandDimsOptions")),
    "GATHER": (B.GATHER, [[5, 4], [2, 3]], {1: np.array([[0, 3, 1], [2, 2, 3]], i32)}, [[5, 2, 3]], _options("GatherOptions", axis=1)),
    "TILE": (B.TILE, [[2, 3], [2]], {1: np.array([2, 3], i32)}, [[4, 9]], _options("TileOptions")),
    "RESIZE_BILINEAR": (B.RESIZE_BILINEAR, [[1, 4, 4, 3], [2]], {1: np.array([7, 9], i32)}, [[1, 7, 9, 3]],
                        _options("ResizeBilinearOptions")),
    "SPACE_TO_DEPTH": (B.SPACE_TO_DEPTH, [[1, 4, 6, 3]], {}, [[1, 2, 3, 12]], _options("SpaceToDepthOptions", blockSize=2)),
    "BATCH_MATMUL with adj_y": (B.BATCH_MATMUL, [[2, 3, 4], [5, 4]], {}, [[2, 3, 5]], _options("BatchMatMulOptions", adjY=True)),
    "FULLY_CONNECTED keeping dims": (B.FULLY_CONNECTED, [[2, 3, 4], [6, 4]], {1: np.ones((6, 4), np.float32)}, [[2, 3, 6]],
                                     _options("FullyConnectedOptions", keepNumDims=True)),
    "AVERAGE_POOL_2D strided": (B.AVERAGE_POOL_2D, [[1, 7, 7, 2]], {}, [[1, 3, 3, 2]],
                                _options("Pool2DOptions", padding=schema.Padding.VALID, strideW=2, strideH=2, filterWidth=3,
                                         filterHeight=3)),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_operator_shape_rule_agrees_with_litert(case, tmp_path):
    code, shapes, constants, outputs, options = CASES[case]
    model = _graph(code, shapes, constants, outputs, *options)
    accepts(model, tmp_path)
    found = litert_shapes(model)
    graph = model.subgraphs[0]
    for tid in graph.outputs:
        assert found[tid] == graph.tensors[tid].shape, (case, found[tid])
    bigger = [[*shape[:-1], shape[-1] + 1] if shape else [2] for shape in outputs]
    rejects(write(_graph(code, shapes, constants, bigger, *options), tmp_path, "bigger.tflite"), "is declared", "computes")


@pytest.mark.parametrize(("code", "shapes", "options", "problem"), [
    (B.ADD, [[1, 4, 4, 3], [1, 4, 4, 2]], (), "do not broadcast"),
    (B.ADD, [[1, 1, 1, 1, 3], [2, 1, 1, 1, 1]], (), "broadcasts ranks up to 4"),
    (B.CONCATENATION, [[1, 2, 3], [1, 3, 3]], _options("ConcatenationOptions", axis=2), "do not join along axis 2"),
    (B.CONCATENATION, [[1, 2, 3], [1, 2, 3]], _options("ConcatenationOptions", axis=3), "axis 3 is out of range"),
])
def test_operator_inputs_the_kernel_cannot_take(code, shapes, options, problem, tmp_path):
    rejects(write(_graph(code, shapes, {}, [[1]], *options), tmp_path), problem)


def test_shapes_computed_at_run_time(tmp_path):
    """A TILE whose multiples come from a graph input could ask for any size when it runs: refused. Keras' dynamic-batch
    RESHAPE (SHAPE -> STRIDED_SLICE -> PACK) is followed through its values and accepted."""
    model = new_model("test: tile")
    x = add_tensor(model, "x", [2, 3], np.float32)
    wanted = add_tensor(model, "wanted", [2], np.float32)
    multiples = add_tensor(model, "multiples", [2], np.int32)
    add_operator(model, B.CAST, [wanted], [multiples])
    y = add_tensor(model, "y", [4, 9], np.float32)
    add_operator(model, B.TILE, [x, multiples], [y])
    set_io(model, [x, wanted], [y])
    rejects(write(model, tmp_path), "(TILE): its multiples are computed at run time")

    model = new_model("test: keras reshape")
    x = add_tensor(model, "x", [1, 2, 2, 3], np.float32)
    shape = add_tensor(model, "shape", [4], np.int32)
    _op(model, B.SHAPE, [x], [shape], *_options("ShapeOptions", outType=schema.TensorType.INT32))
    batch = add_tensor(model, "batch", [], np.int32)
    begin, end, step = (add_tensor(model, n, [1], np.int32, data=np.array([v], i32)) for n, v in (("b", 0), ("e", 1), ("s", 1)))
    _op(model, B.STRIDED_SLICE, [shape, begin, end, step], [batch], *_options("StridedSliceOptions", shrinkAxisMask=1))
    flat = add_tensor(model, "flat", [], np.int32, data=np.array(-1, i32))
    new_shape = add_tensor(model, "new_shape", [2], np.int32)
    _op(model, B.PACK, [batch, flat], [new_shape], *_options("PackOptions", valuesCount=2))
    y = add_tensor(model, "y", [1, 12], np.float32)
    _op(model, B.RESHAPE, [x, new_shape], [y], *_options("ReshapeOptions"))
    set_io(model, [x], [y])
    accepts(model, tmp_path, "keras.tflite")
    assert derived_shapes(model)[y] == litert_shapes(model)[y] == [1, 12]
    model.subgraphs[0].tensors[y].shape = [1, 13]
    rejects(write(model, tmp_path), "(RESHAPE): output 0", "is declared [1, 13] but RESHAPE computes [1, 12]")
