"""What the structural validator costs next to building the interpreter, on the MobileNet v1 extractor and v2.

The validator checks indices, operator signatures (tensor types), quantization and scale relations,
re-derives every shape and bounds the tensors' memory (``lastlayer.model.validate``).

Best of 5 samples (each the mean of 10 calls) for each step: the pure-Python parse (``ModelT.InitFromPackedBuf``), ``validate_model``,
LiteRT's verifier (an interpreter built without delegates, as ``model.io`` does after validating),
and the interpreter a command builds (XNNPACK, ``allocate_tensors``). Prints the times and the
ratio validate / interpreter build (goal: well under 10%).
"""

from __future__ import annotations

import sys
import time
from typing import Callable

from _common import SHARED
from ai_edge_litert import interpreter as litert
from ai_edge_litert import schema_py_generated as schema

from lastlayer.model.validate import validate_model

MODELS = ("mobilenet_v1_1.0_224_quant_embedding_extractor.tflite", "mobilenet_v2_1.0_224_quant.tflite")


def best_of(repeats: int, work: Callable[[], object], inner: int = 10) -> float:
    """Seconds per call: the best of ``repeats`` samples, each the mean of ``inner`` calls."""
    work()  # warm up (imports, caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            work()
        times.append((time.perf_counter() - start) / inner)
    return min(times)


def main(repeats: int = 5) -> None:
    for model in MODELS:
        measure(model, repeats)


def measure(model: str, repeats: int) -> None:
    path = SHARED / "models" / model
    if not path.is_file():
        sys.exit(f"benchmark needs {path}; set LASTLAYER_SHARED")
    data = path.read_bytes()
    tree = schema.ModelT.InitFromPackedBuf(data, 0)

    def build() -> None:
        interp = litert.Interpreter(model_content=data, num_threads=1)
        interp.allocate_tensors()

    parse = best_of(repeats, lambda: schema.ModelT.InitFromPackedBuf(data, 0))
    validate = best_of(repeats, lambda: validate_model(tree, model, file_size=len(data)))
    verify = best_of(repeats, lambda: litert.Interpreter(
        model_content=data, experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    interpreter = best_of(repeats, build)
    print(f"{model} ({len(data):,} bytes, {len(tree.subgraphs[0].operators)} operators), best of {repeats}")
    print(f"  parse (InitFromPackedBuf)              {parse * 1e3:8.2f} ms")
    print(f"  validate_model                         {validate * 1e3:8.2f} ms")
    print(f"  LiteRT verifier (no delegates)         {verify * 1e3:8.2f} ms")
    print(f"  interpreter build (XNNPACK, allocate)  {interpreter * 1e3:8.2f} ms")
    print(f"  validate / interpreter build           {validate / interpreter:8.1%}")
    print(f"  (parse + validate) / interpreter build {(parse + validate) / interpreter:8.1%}")
    print(f"  validate / LiteRT verifier             {validate / verify:8.1%}")


if __name__ == "__main__":
    main()
