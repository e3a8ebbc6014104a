"""``lastlayer cut`` and ``lastlayer join`` as jobs: edit a model, write it, and say what changed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from lastlayer.jobs.base import PathLike
from lastlayer.model.io import load_model, model_to_bytes, save_model
from lastlayer.model.join import join
from lastlayer.model.names import as_text
from lastlayer.model.surgery import cut_at_embedding
from lastlayer.model.view import view_of
from lastlayer.model.zoo import open_model


@dataclass
class CutResult:
    """What ``cut`` kept and removed."""

    model: str
    output: str
    embedding_tensor: str
    embedding_shape: list[int]
    operators_before: int
    operators_after: int
    bytes_before: int
    bytes_after: int
    class_layer: str | None
    removed_tail: list[str] = field(default_factory=list)

    @property
    def embedding_size(self) -> int:
        return self.embedding_shape[-1]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "embedding_size": self.embedding_size}

    def to_text(self) -> str:
        removed = f"; removed {' -> '.join(self.removed_tail)}" if self.removed_tail else ""
        return (f"cut {self.model} at {self.embedding_tensor} ({'x'.join(map(str, self.embedding_shape))}, "
                f"embedding size {self.embedding_size})\n"
                f"kept {self.operators_after} of {self.operators_before} operators{removed}; "
                f"{self.bytes_before:,} -> {self.bytes_after:,} bytes\nwrote {self.output}")


def cut_model(model: PathLike, output: PathLike, tensor: str | None = None) -> CutResult:
    """Cut ``model`` at ``tensor`` (default: the input of its class layer) and write the extractor to ``output``."""
    source = open_model(model)
    before = view_of(source.tree)
    tree, point = cut_at_embedding(source.copy_tree(), tensor, source.name)
    packed = model_to_bytes(tree)
    out_name = as_text(tree.subgraphs[0].tensors[tree.subgraphs[0].outputs[0]].name) if tree.subgraphs[0].outputs else "?"
    load_model(packed, source=f"{source.name} cut at {out_name!r}")  # never write a model lastlayer would refuse
    after = view_of(tree)
    out_tensor = after.main.tensors[after.main.outputs[0]]
    save_model(packed, output)
    removed = [op.name for op in before.main.operators[len(after.main.operators):]] if point else []
    return CutResult(source.name, str(output), out_tensor.name, list(out_tensor.shape), len(before.main.operators),
                     len(after.main.operators), len(source.data), len(packed), point.class_layer_name if point else None, removed)


@dataclass
class JoinResult:
    """The joined model's operators."""

    base: str
    head: str
    output: str
    operators: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_text(self) -> str:
        ops = " -> ".join(self.operators) if len(self.operators) < 12 else f"{len(self.operators)} operators"
        return f"joined {self.base} + {self.head}: {ops}\nwrote {self.output}"


def join_models(base: PathLike, head: PathLike, output: PathLike, mapping: Mapping[str, str] | None = None) -> JoinResult:
    """Connect ``head``'s inputs to ``base``'s outputs and write one model to ``output``."""
    base_file, head_file = open_model(base), open_model(head)
    joined = join(base_file.copy_tree(), head_file.copy_tree(), mapping or None)
    save_model(joined, output)
    return JoinResult(base_file.name, head_file.name, str(output), [op.name for op in view_of(joined).main.operators])
