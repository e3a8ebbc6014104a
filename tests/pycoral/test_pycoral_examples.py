"""The PyCoral-style examples: they port by prefix replacement, and they run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert import interpreter as litert
from PIL import Image

from lastlayer.learn.imprinting import ImprintingHead
from lastlayer.model.export import write_head
from lastlayer.model.file import ModelFile

from conftest import CLASSIFIER_V2, EXTRACTOR, ROOT

EXAMPLES = ROOT / "examples" / "pycoral"
SCRIPTS = ["classify_image.py", "imprinting_learning.py", "backprop_last_layer.py"]
CDH = ("cat", "dog", "hotdog")


def run(script: str, *args: str, cwd: Path) -> str:
    result = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=cwd, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "PYTHONWARNINGS": "error::DeprecationWarning"})
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_ports_to_pycoral_by_prefix_replacement(script):
    source = (EXAMPLES / script).read_text()
    imports = re.findall(r"^\s*(?:from|import)\s+([\w.]+)", source, flags=re.MULTILINE)
    assert any(name.startswith("lastlayer.pycoral.") for name in imports)
    allowed_third_party = {"numpy", "PIL"}
    for name in imports:
        top = name.split(".")[0]
        assert name.startswith("lastlayer.pycoral.") or top in allowed_third_party or top in sys.stdlib_module_names, name
    assert not re.search(r"lastlayer\.(?!pycoral\.)", source), "only lastlayer.pycoral.* may be named"
    ported = source.replace("lastlayer.pycoral.", "pycoral.")
    assert not re.search(r"\blastlayer\.", ported)
    compile(ported, script, "exec")


def _label_pairs(path: Path) -> dict[int, str]:
    return {int(line.split()[0]): line.split(None, 1)[1] for line in path.read_text().splitlines() if line.strip()}


def _top1(model_path: Path, image: Path) -> int:
    interpreter = litert.Interpreter(model_path=str(model_path))  # a stock LiteRT interpreter
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    height, width = detail["shape"][1:3]
    pixels = np.asarray(Image.open(image).convert("RGB").resize((width, height), Image.BILINEAR), dtype=np.uint8)
    interpreter.set_tensor(detail["index"], pixels[np.newaxis])
    interpreter.invoke()
    return int(np.argmax(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])))


def test_classify_image_runs(model_file, models_dir, images_dir, tmp_path):
    out = run("classify_image.py", "-m", str(model_file(CLASSIFIER_V2)), "-l", str(models_dir / "imagenet_labels.txt"),
              "-i", str(images_dir / "parrot.jpg"), "-k", "2", "-c", "2", cwd=tmp_path)
    lines = out.splitlines()
    assert sum(bool(re.fullmatch(r"\d+\.\dms", line)) for line in lines) == 2
    results = lines[lines.index("-------RESULTS--------") + 1:]
    assert len(results) == 2 and re.fullmatch(r"macaw: 0\.9\d{4}", results[0])


@pytest.fixture
def cdh_data(tmp_path, images_dir) -> Path:
    data = tmp_path / "cdh"
    for name in CDH:
        (data / name).mkdir(parents=True)
        for path in (images_dir / "imprinting").glob(f"{name}_*.bmp"):
            (data / name / path.name).symlink_to(path)
    return data


def test_imprinting_learning_runs_on_a_plain_extractor(model_file, images_dir, cdh_data, tmp_path):
    out = run("imprinting_learning.py", "--model_path", str(model_file(EXTRACTOR)), "--data", str(cdh_data),
              "--test_ratio", "0.34", cwd=tmp_path)
    model = tmp_path / "mobilenet_v1_1.0_224_quant_embedding_extractor_retrained.tflite"
    assert "Top 1 : 100%" in out and model.is_file()
    assert (tmp_path / f"{model.stem}.txt").read_text() == "0  cat\n1  dog\n2  hotdog\n"
    assert _top1(model, images_dir / "imprinting" / "dog_test_0.bmp") == 1


def test_imprinting_learning_keeps_classes_of_a_coral_model(model_file, images_dir, cdh_data, tmp_path):
    head = ImprintingHead(normalize_examples=False)
    head.add_base_classes(np.eye(1024)[:2], ["base0", "base1"])
    head.add(np.eye(1024)[2], 2)
    coral = tmp_path / "coral_l2norm.tflite"
    coral.write_bytes(write_head(ModelFile.read(model_file(EXTRACTOR)), head.export()))
    output = tmp_path / "kept.tflite"
    out = run("imprinting_learning.py", "--model_path", str(coral), "--data", str(cdh_data), "--output", str(output),
              "--test_ratio", "0.34", "--keep_classes", cwd=tmp_path)
    assert "Top 1 : 100%" in out
    assert _label_pairs(tmp_path / "kept.txt") == {3: "cat", 4: "dog", 5: "hotdog"}  # ids after the 3 kept classes
    assert _top1(output, images_dir / "imprinting" / "hotdog_test_0.bmp") == 5


def test_backprop_last_layer_runs(model_file, datasets_dir, tmp_path):
    data = tmp_path / "flowers"
    classes = sorted(p.name for p in (datasets_dir / "flowers").iterdir() if p.is_dir())
    for name in classes:
        (data / name).mkdir(parents=True)
        for path in sorted((datasets_dir / "flowers" / name).iterdir())[:5]:
            (data / name / path.name).symlink_to(path)
    out_dir = tmp_path / "out"
    out = run("backprop_last_layer.py", "--embedding_extractor_path", str(model_file(EXTRACTOR)), "--data_dir", str(data),
              "--output_dir", str(out_dir), "--num_iter", "200", "--batch_size", "16", cwd=tmp_path)
    accuracy = float(re.search(r"Saved model test accuracy: ([\d.]+)%", out).group(1))
    assert 0 <= accuracy <= 100 and "train_acc" in out
    assert _label_pairs(out_dir / "label_map.txt") == dict(enumerate(classes))
    model = out_dir / "retrained_model.tflite"
    train_image = sorted((data / "sunflowers").iterdir())[-1]
    assert _top1(model, train_image) == classes.index("sunflowers")
