"""``inspect`` and ``check`` describe any model lastlayer loads, however odd, without an internal error."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lastlayer.cli import main
from lastlayer.model.edit import add_tensor
from model.validation_cases import accepts, tree

HEAD = "mobilenet_quant_v1_224_head_layers.tflite"


def _no_inputs(model):
    model.subgraphs[0].inputs = []


def _output_is_the_input(model):
    graph = model.subgraphs[0]
    graph.outputs = [graph.inputs[0]]


def _output_is_a_constant(model):
    graph = model.subgraphs[0]
    graph.outputs = [add_tensor(model, "constant", [1, 3], np.float32, data=np.ones((1, 3)))]


def _two_outputs(model):
    graph = model.subgraphs[0]
    graph.outputs = [graph.outputs[0], graph.operators[0].outputs[0]]


def _no_operators(model):
    graph = model.subgraphs[0]
    graph.operators, graph.outputs = [], [graph.inputs[0]]


def _two_inputs(model):
    graph = model.subgraphs[0]
    graph.inputs = [graph.inputs[0], add_tensor(model, "unused input", [1, 4], np.float32)]


ODD = {"no graph inputs": _no_inputs, "output is the input": _output_is_the_input, "output is a constant": _output_is_a_constant,
       "two outputs": _two_outputs, "no operators": _no_operators, "two inputs": _two_inputs}


@pytest.mark.parametrize("odd", list(ODD), ids=list(ODD))
def test_inspect_and_check_describe_odd_models(odd, tmp_path, capsys):
    model = tree(HEAD)
    ODD[odd](model)
    path = str(accepts(model, tmp_path))  # the loader accepts it
    for argv, codes in ((["inspect", path], (0,)), (["inspect", path, "--json"], (0,)), (["check", path], (0, 1))):
        code = main(argv)
        out, err = capsys.readouterr()
        assert code in codes and "internal error" not in err and "Traceback" not in err, (argv, err)
        if argv[-1] == "--json":
            shown = json.loads(out)
            assert shown["input_count"] == len(model.subgraphs[0].inputs) and shown["output_count"] == len(model.subgraphs[0].outputs)
    if odd == "no graph inputs":
        main(["inspect", path])
        assert "input:  none (the model has no graph input" in capsys.readouterr().out


def test_commands_that_run_a_model_without_inputs_say_why(tmp_path, capsys, images_dir):
    model = tree(HEAD)
    _no_inputs(model)
    path = str(accepts(model, tmp_path))
    assert main(["classify", "-m", path, str(images_dir / "cat.bmp")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"lastlayer: error: {path} has 0 inputs") and "internal error" not in err, err

