"""Picking what to edit in a model's object tree, shared by the tree edits."""

from __future__ import annotations

import random
from typing import Any

from ai_edge_litert import schema_py_generated as schema

INT32_MAX = 2**31 - 1


def as_list(values: Any) -> list[int]:
    return [] if values is None else [int(v) for v in values]


def index_value(rng: random.Random, count: int) -> int:
    return rng.choice([-1, -1, -2, count, count + 1, count + 100, INT32_MAX, -(2**31),
                       rng.randrange(max(count, 1)), rng.randrange(max(count, 1))])


def pick_graph(model: schema.ModelT, rng: random.Random) -> schema.SubGraphT:
    return rng.choice(model.subgraphs)


def pick_op(model: schema.ModelT, rng: random.Random) -> tuple[schema.SubGraphT, int, schema.OperatorT] | None:
    graph = pick_graph(model, rng)
    if not graph.operators:
        return None
    index = rng.randrange(len(graph.operators))
    return graph, index, graph.operators[index]


def pick_tensor(model: schema.ModelT, rng: random.Random) -> tuple[int, schema.TensorT] | None:
    graph = pick_graph(model, rng)
    if not graph.tensors:
        return None
    index = rng.randrange(len(graph.tensors))
    return index, graph.tensors[index]
