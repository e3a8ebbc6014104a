from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lastlayer.cli import main

from conftest import CLASSIFIER_V2, EXTRACTOR, EXTRACTOR_EDGETPU

CAT_CLASSES = {"tabby, tabby cat", "tiger cat", "Persian cat", "Siamese cat, Siamese", "Egyptian cat"}
PARROTS = ("macaw", "lorikeet", "African grey", "cockatoo", "parrot")


def run_json(capsys, *argv):
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_classify_cat_and_parrot(capsys, model_file, images_dir):
    out = run_json(capsys, "classify", "--model", str(model_file(CLASSIFIER_V2)),
                   str(images_dir / "cat.bmp"), str(images_dir / "parrot.jpg"), "--top-k", "3")
    cat, parrot = out["results"]
    assert cat["classes"][0]["label"] in CAT_CLASSES
    assert any(word in parrot["classes"][0]["label"] for word in PARROTS)
    assert len(cat["classes"]) == 3 and cat["classes"][0]["score"] >= cat["classes"][1]["score"]


def test_classify_by_known_name_with_label_file_formats(capsys, model_file, images_dir, tmp_path):
    source = (model_file("imagenet_labels.txt")).read_text().splitlines()
    colon = tmp_path / "colon.txt"
    colon.write_text("".join(f"{i}: {name}\n" for i, name in enumerate(source)))
    plain = tmp_path / "plain.txt"
    plain.write_text("".join(f"{name}\n" for name in source))
    for labels in (colon, plain):
        out = run_json(capsys, "classify", "--model", CLASSIFIER_V2, "--labels", str(labels),
                       str(images_dir / "cat.bmp"), "-k", "1")
        assert out["results"][0]["classes"][0]["label"] in CAT_CLASSES


def test_classify_threshold_and_text_output(capsys, model_file, images_dir):
    assert main(["classify", "-m", CLASSIFIER_V2, str(images_dir / "parrot.jpg"), "--threshold", "0.5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].endswith("parrot.jpg") and len(lines) == 2 and "macaw" in lines[1]


def test_inspect_text_and_json(capsys, model_file):
    assert main(["inspect", str(model_file(EXTRACTOR_EDGETPU))]) == 0
    assert "[Edge TPU]" in capsys.readouterr().out
    data = run_json(capsys, "inspect", str(model_file(EXTRACTOR)))
    graph = data["subgraphs"][0]
    out = graph["tensors"][graph["outputs"][0]]
    assert out["name"] == "MobilenetV1/Logits/AvgPool_1a/AvgPool" and out["shape"] == [1, 1, 1, 1024]
    assert data["has_edgetpu_op"] is False and len(graph["operators"]) == 28


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["classify", "-m", "{models}/model_invoking_error.tflite", "{images}/cat.bmp"], "fake-op-double"),
        (["classify", "-m", "{models}/" + EXTRACTOR_EDGETPU, "{images}/cat.bmp"], "compiled for the Edge TPU"),
        (["classify", "-m", CLASSIFIER_V2, "{tmp}/corrupt.jpg"], "corrupt.jpg"),
        (["classify", "-m", CLASSIFIER_V2, "{tmp}/missing.jpg"], "missing.jpg does not exist"),
        (["inspect", "{tmp}/text.tflite"], "text.tflite is not a TensorFlow Lite model"),
        (["inspect", "{tmp}/truncated.tflite"], "truncated.tflite is truncated or corrupt"),
    ],
)
def test_bad_input_is_one_line_exit_1(capsys, models_dir, images_dir, tmp_path, argv, expected):
    (tmp_path / "corrupt.jpg").write_bytes((images_dir / "owl.jpg").read_bytes()[:500])
    (tmp_path / "text.tflite").write_text("not a model")
    (tmp_path / "truncated.tflite").write_bytes((models_dir / EXTRACTOR).read_bytes()[:10000])
    args = [a.format(models=models_dir, images=images_dir, tmp=tmp_path) for a in argv]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("lastlayer: error:") and expected in err and "\n" not in err


def test_installed_command_no_traceback_and_help(models_dir, images_dir, tmp_path):
    env = {**os.environ, "LASTLAYER_MODELS": str(models_dir)}
    bad = subprocess.run([sys.executable, "-m", "lastlayer.cli", "inspect", str(tmp_path / "nope.tflite")],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and "nope.tflite" in bad.stderr
    usage = subprocess.run([sys.executable, "-m", "lastlayer.cli", "classify"], capture_output=True, text=True, env=env)
    assert usage.returncode == 2
    helped = subprocess.run([sys.executable, "-m", "lastlayer.cli"], capture_output=True, text=True, env=env)
    assert helped.returncode == 0 and "classify" in helped.stdout and "example" in helped.stdout.lower()


def test_unwritable_outputs_are_one_line_errors_and_leave_nothing(capsys, tmp_path, tmp_path_factory, images_dir):
    data = tmp_path_factory.mktemp("data")
    for name in ("cat", "dog", "hotdog"):
        (data / name).mkdir()
        for image in images_dir.glob(f"imprinting/{name}_*.bmp"):
            (data / name / image.name).symlink_to(image)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main(["cut", "mobilenet_v2_1.0_224_quant.tflite", "-o", str(tmp_path / "missing" / "x.tflite")]) == 1
    err = capsys.readouterr().err.strip()
    assert "missing" in err and "does not exist" in err and "\n" not in err
    assert main(["imprint", str(data), "--test-ratio", "0", "-o", str(blocker / "out")]) == 1
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("lastlayer: error:")]
    assert len(errors) == 1 and "cannot create output folder" in errors[0] and errors[0].endswith("(--output)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    import lastlayer.cli.inspect as verb

    def broken(args):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr(verb, "run", broken)
    assert main(["inspect", "x.tflite"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error (ZeroDivisionError: division by zero)" in err and "LASTLAYER_DEBUG" in err
    monkeypatch.setenv("LASTLAYER_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["inspect", "x.tflite"])
