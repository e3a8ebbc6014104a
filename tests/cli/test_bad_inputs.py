"""A corpus of bad inputs: each gets exit 1 (bad input) or 2 (bad usage) and one line naming the file and the fix.

Every case also checks that no traceback is printed and that nothing is left behind in the working folder.
Cases run in-process through ``lastlayer.cli.main`` (fast); the ones that load a model that could crash
native code run in a subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from lastlayer.cli import main

from conftest import CLASSIFIER_V2, EXTRACTOR, EXTRACTOR_EDGETPU

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("LASTLAYER_SHARED", ROOT.parent / "shared"))
MODELS = Path(os.environ.get("LASTLAYER_MODELS", str(SHARED / "models")).split(os.pathsep)[0])
FLOWERS = SHARED / "datasets" / "flowers"
IMAGES = SHARED / "images"


@dataclass
class Env:
    """The case's working folder and helpers to fill it."""

    root: Path

    def file(self, name: str, data: bytes | str = b"") -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(path)

    def model(self, name: str = EXTRACTOR) -> str:
        return str(MODELS / name)

    def image(self, name: str = "cat.bmp") -> str:
        return str(IMAGES / name)

    def dataset(self, name: str = "data", classes: dict[str, int] | None = None) -> str:
        """``name/<class>/`` with symlinks to flower photos (2 classes x 3 by default)."""
        folder = self.root / name
        for index, (cls, count) in enumerate((classes or {"daisy": 3, "roses": 3}).items()):
            source = sorted((FLOWERS / ("daisy", "roses", "tulips")[index % 3]).iterdir())[:count]
            (folder / cls).mkdir(parents=True, exist_ok=True)
            for image in source:
                (folder / cls / image.name).symlink_to(image)
        folder.mkdir(parents=True, exist_ok=True)
        return str(folder)


@dataclass
class Case:
    name: str
    build: Callable[[Env], list[str]]
    code: int = 1
    says: str = ""  # a fragment the error line must contain (besides the file); "" for usage errors
    subprocess: bool = False


def _tflite_version_only() -> bytes:
    """A 24-byte TFL3 flatbuffer with only a version, built by the flatbuffers Builder."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT()
    model.version = 3
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _segmentation_like() -> bytes:
    """image -> 1x1 CONV_2D -> [1, 16, 16, 4]: spatial outputs, no class layer (nothing to cut)."""
    from ai_edge_litert import schema_py_generated as schema

    from lastlayer.model.edit import add_operator, add_tensor, new_model, set_io
    from lastlayer.model.io import model_to_bytes

    rng = np.random.default_rng(0)
    model = new_model("test: segmentation-like")
    x = add_tensor(model, "image", [1, 16, 16, 3], np.float32)
    w = add_tensor(model, "conv/weights", [4, 1, 1, 3], np.float32, data=rng.normal(size=(4, 1, 1, 3)))
    b = add_tensor(model, "conv/bias", [4], np.float32, data=np.zeros(4))
    y = add_tensor(model, "mask", [1, 16, 16, 4], np.float32)
    conv = schema.Conv2DOptionsT()
    conv.padding, conv.strideW, conv.strideH = schema.Padding.SAME, 1, 1
    add_operator(model, schema.BuiltinOperator.CONV_2D, [x, w, b], [y], options_type=schema.BuiltinOptions.Conv2DOptions, options=conv)
    set_io(model, [x], [y])
    return model_to_bytes(model)


def _real(name: str = EXTRACTOR) -> bytes:
    return (MODELS / name).read_bytes()


def _regression(name: str) -> bytes:
    """A model that once crashed lastlayer (issue 26), rebuilt by ``fuzz/regressions.py`` from the shared models."""
    sys.path.insert(0, str(ROOT))
    from fuzz.regressions import REGRESSIONS, build

    return build(next(case for case in REGRESSIONS if case.name == name), MODELS)


def _loop(env: Env) -> str:
    os.symlink(env.root / "b.tflite", env.root / "a.tflite")
    os.symlink(env.root / "a.tflite", env.root / "b.tflite")
    return str(env.root / "a.tflite")


def _png(env: Env, name: str, size: tuple[int, int]) -> str:
    path = env.root / name
    Image.new("1", size).save(path)
    return str(path)


def _unwritable(env: Env) -> str:
    """An output folder that cannot be created, even by root: below /proc."""
    return "/proc/self/lastlayer-out"


def _read_only(env: Env) -> str:
    """An existing folder that cannot be written: a 0500 folder, or /proc/self for root (who ignores modes)."""
    if os.geteuid() == 0:
        return "/proc/self"
    folder = env.root / "ro"
    folder.mkdir(mode=0o500)
    return str(folder)


MODEL_CASES = [
    Case("model missing", lambda e: ["inspect", str(e.root / "missing.tflite")], says="missing.tflite"),
    Case("model is a folder", lambda e: ["inspect", str(e.root)], says="folder"),
    Case("model symlink loop", lambda e: ["inspect", _loop(e)], says="a.tflite"),
    Case("model empty", lambda e: ["inspect", e.file("empty.tflite")], says="empty.tflite"),
    Case("model is text", lambda e: ["inspect", e.file("text.tflite", "hello, I am not a model\n" * 10)], says="text.tflite"),
    Case("model truncated", lambda e: ["inspect", e.file("cut.tflite", _real()[:5000])], says="cut.tflite"),
    Case("model garbage after TFL3", lambda e: ["inspect", e.file("junk.tflite", b"\x1c\0\0\0TFL3" + os.urandom(4000))], says="junk.tflite"),
    Case("model only a version", lambda e: ["inspect", e.file("v.tflite", _tflite_version_only())], says="v.tflite"),
    Case("model only a version, classify", lambda e: ["classify", "-m", e.file("v.tflite", _tflite_version_only()), e.image()],
         says="v.tflite", subprocess=True),
    Case("model whose invoke fails", lambda e: ["classify", "-m", e.model("model_invoking_error.tflite"), e.image()],
         says="model_invoking_error.tflite", subprocess=True),
    Case("Edge TPU model without the runtime", lambda e: ["classify", "-m", e.model(EXTRACTOR_EDGETPU), e.image()],
         says="Edge TPU", subprocess=True),
    Case("cut a segmentation-like model", lambda e: ["cut", e.file("seg.tflite", _segmentation_like()), "-o", str(e.root / "x.tflite")],
         says="seg.tflite"),
    Case("classify, model missing", lambda e: ["classify", "-m", str(e.root / "nope.tflite"), e.image()], says="nope.tflite"),
    Case("train, extractor is text", lambda e: ["train", e.dataset(), "-o", str(e.root / "out"), "-e", e.file("t.tflite", "text")],
         says="t.tflite"),
    Case("imprint, model empty", lambda e: ["imprint", e.dataset(), "-o", str(e.root / "out"), "-m", e.file("e.tflite")], says="e.tflite"),
    Case("imprint, resume a non-imprinted model", lambda e: ["imprint", e.dataset(), "-o", str(e.root / "out"), "--resume",
                                                               e.model(CLASSIFIER_V2)], says="not an imprinted model"),
    Case("check, model missing", lambda e: ["check", str(e.root / "gone.tflite")], says="gone.tflite"),
    Case("check, model is text", lambda e: ["check", e.file("t.tflite", "x" * 100)], says="t.tflite"),
    Case("join, base missing", lambda e: ["join", str(e.root / "base.tflite"), e.model(), "-o", str(e.root / "j.tflite")],
         says="base.tflite"),
    Case("evaluate, model truncated", lambda e: ["evaluate", e.file("cut.tflite", _real(CLASSIFIER_V2)[:100000]), e.dataset()],
         says="cut.tflite"),
    Case("cut, model missing", lambda e: ["cut", str(e.root / "none.tflite"), "-o", str(e.root / "x.tflite")], says="none.tflite"),
    Case("model of 8 bytes", lambda e: ["inspect", e.file("tiny.tflite", b"\x08\0\0\0TFL3")], says="tiny.tflite"),
    # issue 26: files that passed inspect and check yet killed the native code
    Case("classify, float softmax output typed RESOURCE", lambda e: ["classify", "-m", e.file(
        "res.tflite", _regression("float-softmax-output-resource-train-float32")), e.image()], says="is RESOURCE", subprocess=True),
    Case("train, float softmax into a uint8 output", lambda e: ["train", e.dataset(), "-o", str(e.root / "out"), "-e", e.file(
        "sm.tflite", _regression("float-softmax-uint8-output"))], says="(SOFTMAX): output 0", subprocess=True),
    Case("imprint, resource variable operator", lambda e: ["imprint", e.dataset(), "-o", str(e.root / "out"), "-m", e.file(
        "var.tflite", _regression("assign-variable-with-one-input"))], says="ASSIGN_VARIABLE", subprocess=True),
    Case("check, ADD output scale 1e-7", lambda e: ["check", e.file("add.tflite", _regression("add-output-scale-1e-7"))],
         says="(ADD): the scales", subprocess=True),
    Case("classify, a WHILE loop that never ends", lambda e: ["classify", "-m", e.file(
        "loop.tflite", _regression("while-condition-always-true")), e.image()], says="control flow (WHILE)", subprocess=True),
    Case("cut, intermediate batch of 131,071", lambda e: ["cut", e.file("batch.tflite", _regression("intermediate-batch-131071-float")),
                                                          "-o", str(e.root / "x.tflite")], says="is declared [131071", subprocess=True),
    Case("imprint, head graph with a 362x362x1024 input", lambda e: ["imprint", e.dataset(), "-o", str(e.root / "out"), "-m", e.file(
        "head.tflite", _regression("head-input-362x362x1024"))], says="(CONV_2D): output 0", subprocess=True),
    Case("classify, output typed BFLOAT16", lambda e: ["classify", "-m", e.file("bf16.tflite", _regression("output-bfloat16")),
                                                       e.image()], says="is BFLOAT16", subprocess=True),
    Case("imprint, input typed COMPLEX128", lambda e: ["imprint", e.dataset(), "-o", str(e.root / "out"), "-m", e.file(
        "c128.tflite", _regression("input-complex128"))], says="is COMPLEX128", subprocess=True),
    Case("inspect, custom operator name not UTF-8", lambda e: ["inspect", e.file("utf.tflite", _regression("custom-name-not-utf8"))],
         says="not valid UTF-8", subprocess=True),
]

IMAGE_CASES = [
    Case("image corrupt", lambda e: ["classify", "-m", e.model(CLASSIFIER_V2), e.file("bad.jpg", b"\xff\xd8\xff\xe0" + os.urandom(500))],
         says="bad.jpg"),
    Case("image truncated", lambda e: ["classify", "-m", e.model(CLASSIFIER_V2), e.file("cut.jpg", Path(e.image("owl.jpg")).read_bytes()[:300])],
         says="cut.jpg"),
    Case("image empty", lambda e: ["classify", "-m", e.model(CLASSIFIER_V2), e.file("empty.png")], says="empty.png"),
    Case("image with the wrong extension", lambda e: ["classify", "-m", e.model(CLASSIFIER_V2), e.file("notes.jpg", "just text")],
         says="notes.jpg"),
    Case("image huge", lambda e: ["classify", "-m", e.model(CLASSIFIER_V2), _png(e, "huge.png", (3000, 3000))], says="image too large"),
    Case("image missing", lambda e: ["classify", "-m", e.model(CLASSIFIER_V2), str(e.root / "gone.jpg")], says="gone.jpg"),
]


def _csv(e: Env, name: str, text: bytes | str) -> str:
    e.dataset()
    return e.file(name, text)


def _hidden_only(e: Env) -> str:
    (e.root / "d" / ".cache" / "x").mkdir(parents=True)
    return str(e.root / "d")


def _unreadable_class(e: Env) -> str:
    folder = e.dataset()
    for image in (Path(folder) / "roses").iterdir():
        image.unlink()
        image.write_bytes(b"\xff\xd8\xff broken")
    return folder


DATASET_CASES = [
    Case("dataset missing", lambda e: ["train", str(e.root / "none"), "-o", str(e.root / "out")], says="does not exist"),
    Case("dataset is a file", lambda e: ["train", e.file("photo.jpg", "x"), "-o", str(e.root / "out")], says="is a file, not a folder"),
    Case("dataset empty", lambda e: ["imprint", str(e.root), "-o", str(e.root / "out")], says="no class sub-folders"),
    Case("dataset with one class", lambda e: ["train", e.dataset(classes={"daisy": 4}), "-o", str(e.root / "out")], says="2 classes"),
    Case("class with no images", lambda e: ["train", e.dataset(classes={"daisy": 3, "empty": 0}), "-o", str(e.root / "out")],
         says="empty has no images"),
    Case("only hidden sub-folders", lambda e: ["train", _hidden_only(e), "-o", str(e.root / "out")], says="no class sub-folders"),
    Case("class name with a newline", lambda e: ["train", e.dataset(classes={"a\nb": 3, "c": 3}), "-o", str(e.root / "out")],
         says="rename it"),
    Case("class name with an escape", lambda e: ["imprint", e.dataset(classes={"a\x1b[31m": 3, "c": 3}), "-o", str(e.root / "out")],
         says="rename it"),
    Case("Latin-1 CSV", lambda e: ["train", _csv(e, "l.csv", "data/daisy/x.jpg,caf\xe9\n".encode("latin-1")), "-o", str(e.root / "out")],
         says="not UTF-8"),
    Case("CSV row to a missing file", lambda e: ["train", _csv(e, "m.csv", "path,label\nnope.jpg,a\n"), "-o", str(e.root / "out")],
         says="nope.jpg does not exist"),
    Case("CSV without rows", lambda e: ["train", _csv(e, "h.csv", "path,label\n"), "-o", str(e.root / "out")], says="no rows"),
    Case("CSV that is a folder", lambda e: ["train", str((e.root / "x.csv").mkdir() or e.root / "x.csv"), "-o", str(e.root / "out")],
         says="is a folder, not a CSV file"),
    Case("CSV with NUL bytes", lambda e: ["train", _csv(e, "n.csv", b"a\0b,c\n"), "-o", str(e.root / "out")], says="n.csv"),
    Case("CSV row with one column", lambda e: ["train", _csv(e, "o.csv", "data/daisy\n"), "-o", str(e.root / "out")], says="path,label"),
    Case("no readable image in a class", lambda e: ["train", _unreadable_class(e), "-o", str(e.root / "out"), "--val-ratio", "0"],
         says="roses of"),
    Case("strict stops at a corrupt image", lambda e: ["imprint", _unreadable_class(e), "-o", str(e.root / "out"), "--strict"],
         says="roses"),
    Case("imprint, dataset missing", lambda e: ["imprint", str(e.root / "none"), "-o", str(e.root / "out")], says="none"),
    Case("evaluate, dataset missing", lambda e: ["evaluate", e.model(CLASSIFIER_V2), str(e.root / "none")], says="none"),
    Case("evaluate, classes not in the model", lambda e: ["evaluate", e.model(CLASSIFIER_V2), e.dataset(classes={"xx": 2, "yy": 2})],
         says="not classes of"),
]


def _labels(e: Env, data: bytes) -> list[str]:
    return ["classify", "-m", e.model(CLASSIFIER_V2), e.image(), "-l", e.file("labels.txt", data)]


LABEL_CASES = [
    Case("labels missing", lambda e: ["classify", "-m", e.model(CLASSIFIER_V2), e.image(), "-l", str(e.root / "l.txt")], says="label file"),
    Case("labels a folder", lambda e: ["classify", "-m", e.model(CLASSIFIER_V2), e.image(), "-l", str(e.root)], says="is a folder"),
    Case("labels binary", lambda e: _labels(e, b"\x00\x01\x02binary\x00"), says="binary"),
    Case("labels Latin-1", lambda e: _labels(e, "0 caf\xe9\n".encode("latin-1")), says="not UTF-8"),
    Case("evaluate, labels missing", lambda e: ["evaluate", e.model(CLASSIFIER_V2), e.dataset(), "-l", str(e.root / "l.txt")],
         says="label file"),
]


def _file_at(e: Env, name: str) -> str:
    return e.file(name, "I am a file")


OUTPUT_CASES = [
    Case("train into an unwritable folder", lambda e: ["train", e.dataset(), "-o", _unwritable(e), "--solver", "sgd", "--num-iter", "5"], says="lastlayer-out"),
    Case("train into an existing read-only folder", lambda e: ["train", e.dataset(), "-o", _read_only(e), "--solver", "sgd", "--num-iter", "5"],
         says="writable"),
    Case("train, a file where the folder should be", lambda e: ["train", e.dataset(), "-o", _file_at(e, "out"), "--solver", "sgd", "--num-iter", "5"],
         says="is a file, not a folder"),
    Case("imprint, a file where the folder should be", lambda e: ["imprint", e.dataset(), "-o", _file_at(e, "out")],
         says="is a file, not a folder"),
    Case("imprint, below a file", lambda e: ["imprint", e.dataset(), "-o", str(Path(_file_at(e, "f")) / "out")], says="f/out"),
    Case("evaluate, report dir is a file", lambda e: ["evaluate", e.model(CLASSIFIER_V2), e.dataset(classes={"daisy": 2}), "--report-dir",
                                                       _file_at(e, "rep")], says="is a file, not a folder"),
    Case("cut, output path is a folder", lambda e: ["cut", e.model(CLASSIFIER_V2), "-o", str(e.root)], says="is a folder"),
    Case("join, output path is a folder", lambda e: ["join", e.model("mobilenet_quant_v1_224_feature_layers_edgetpu.tflite"),
                                                     e.model("mobilenet_quant_v1_224_head_layers.tflite"), "-o", str(e.root)],
         says="is a folder"),
    Case("cut into a missing folder", lambda e: ["cut", e.model(CLASSIFIER_V2), "-o", str(e.root / "no" / "x.tflite")],
         says="does not exist"),
]


def _usage(*argv: str) -> Case:
    return Case("usage " + " ".join(argv), lambda e: list(argv), code=2)


OPTION_CASES = [
    _usage("classify", "x.jpg", "--top-k", "-1"), _usage("train", "d", "-o", "o", "--lr", "inf"), _usage("train", "d", "-o", "o", "--lr", "0"),
    _usage("train", "d", "-o", "o", "--epochs", "0"), _usage("train", "d", "-o", "o", "--momentum", "1"),
    _usage("train", "d", "-o", "o", "--reg", "-1"), _usage("train", "d", "-o", "o", "--val-ratio", "-0.1"),
    _usage("imprint", "d", "-o", "o", "--test-ratio", "1"), _usage("imprint", "d", "-o", "o", "--finetune-steps", "0"),
    _usage("imprint", "d", "-o", "o", "--shots", "-3"), _usage("train", "d", "-o", "o", "--batch-size", "abc"),
    _usage("train", "d", "-o", "o", "--print-every", "-1"), _usage("classify", "x.jpg", "--threads", "0"),
    _usage("classify", "x.jpg", "--threshold", "nan"), _usage("imprint", "d", "-o", "o", "--scale", "nan"),
    _usage("train", "d", "-o", "o", "--num-iter", "x"), _usage("train", "d"),
]

CASES = MODEL_CASES + IMAGE_CASES + DATASET_CASES + LABEL_CASES + OUTPUT_CASES + OPTION_CASES
XFAIL: dict[str, str] = {}  # cases whose owner has not fixed them yet (strict: a fix makes the mark fail)


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _run(argv: list[str], in_subprocess: bool, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    if in_subprocess:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        done = subprocess.run([sys.executable, "-m", "lastlayer", *argv], capture_output=True, text=True, env=env, timeout=120)
        return done.returncode, done.stderr
    try:
        code = main(argv)
    except SystemExit as stopped:
        code = stopped.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=[pytest.mark.xfail(strict=True, reason=XFAIL[c.name])]
                                               if c.name in XFAIL else []) for c in CASES])
def test_bad_input(case: Case, models_dir, datasets_dir, images_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LASTLAYER_MAX_PIXELS", "4000000")
    monkeypatch.chdir(tmp_path)
    env = Env(tmp_path)
    argv = case.build(env) + (["--quiet"] if case.code == 1 and case.build is not None else [])
    before = _snapshot(tmp_path)
    code, err = _run(argv, case.subprocess, capsys)
    assert "Traceback" not in err, err
    assert code == case.code, err
    lines = err.strip().splitlines()
    if case.code == 2:
        assert lines[0].startswith("usage: lastlayer ") and lines[-1].startswith("lastlayer ") and ": error: " in lines[-1], err
    else:
        errors = [line for line in lines if line.startswith("lastlayer: error: ")]
        assert len(errors) == 1 and errors[0] == lines[-1], err
        assert case.says in errors[0], errors[0]
        assert "; " in errors[0] or " (" in errors[0], f"no fix in: {errors[0]}"
    if os.environ.get("LASTLAYER_SHOW_CORPUS"):
        print(f"\n{case.name}: {lines[-1] if lines else ''}", file=sys.__stderr__)
    assert _snapshot(tmp_path) == before, "files left behind"


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 60
