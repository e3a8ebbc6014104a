"""The package reads as the data flow: each room imports only from the rooms before it, and no module grows past 500 lines.

files -> images -> model -> runtime -> embeddings -> (report) -> learn -> jobs -> sources -> teach -> serve -> cli,
with the leaf contracts (errors; layer, quantization) below everything. Checked on the source with ``ast``, so an
import added anywhere (also inside a function or under TYPE_CHECKING) that points the wrong way fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import lastlayer

PACKAGE = Path(lastlayer.__file__).parent
# Each step may import from the steps before it (and from itself); rooms in one step do not import each other.
STEPS = [
    ("errors",),  # the errors every room raises
    ("lastlayer", "layer", "quantization"),  # the package root (lazy exports, the version); a learner's arrays; quantization
    ("files",),  # datasets as paths + labels, all-or-nothing outputs, checkpoints
    ("images",),  # decoding and rendering pixels
    ("model",),  # the .tflite as an object tree; where models come from; the Edge TPU's rules
    ("runtime",),  # running a model: interpreters, clones, lanes, batches, the prediction vocabulary
    ("embeddings",),  # a dataset's embeddings through the cache
    ("report",),  # metrics, intervals and plots (learners and jobs measure with them)
    ("learn",),  # the heads: NumPy estimators that know no file format
    ("jobs",),  # train, imprint, evaluate, classify, surgery
    ("sources",),  # frames from cameras, videos, streams and folders
    ("teach",),  # the teaching state, session and live loop
    ("serve", "demo", "pycoral"),  # the web app, the demo, PyCoral's paths
    ("cli",),  # the command line
    ("__main__",),  # python -m lastlayer
]
STEP_OF = {room: index for index, rooms in enumerate(STEPS) for room in rooms}
GENERATED = {"metadata_schema_py_generated.py"}
MAX_LINES = 500


def _room(module: str) -> str:
    parts = module.split(".")
    return "lastlayer" if len(parts) == 1 else parts[1]


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ("lastlayer", *path.relative_to(PACKAGE).with_suffix("").parts)
        found.append((".".join(parts[:-1] if parts[-1] == "__init__" else parts), path))
    return found


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return [(line, name) for line, name in found if name == "lastlayer" or name.startswith("lastlayer.")]


def test_every_room_is_placed_in_the_flow():
    rooms = {_room(module) for module, _ in _modules()}
    assert rooms <= set(STEP_OF), f"place {sorted(rooms - set(STEP_OF))} in STEPS (and in the README's layout)"


def test_each_room_imports_only_from_the_rooms_before_it():
    wrong = []
    for module, path in _modules():
        room = _room(module)
        for line, imported in _imports(path):
            other = _room(imported)
            if other != room and STEP_OF[other] >= STEP_OF[room]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {room} imports {imported}")
    assert not wrong, "imports against the data flow:\n" + "\n".join(wrong)


def test_no_hand_written_module_is_over_500_lines():
    sizes = {path.relative_to(PACKAGE.parent): len(path.read_text().splitlines())
             for _, path in _modules() if path.name not in GENERATED}
    assert not {p: n for p, n in sizes.items() if n > MAX_LINES}


def test_the_top_level_keeps_only_leaf_contracts():
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == ["__init__", "__main__", "demo", "errors", "layer", "quantization"]
