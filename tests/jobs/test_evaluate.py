from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lastlayer.cli import main
from lastlayer.demo import FIRST_CLASSES, LATER_CLASS, run_demo
from lastlayer.files.datasets import load_dataset
from lastlayer.report.metrics import classification_report
from lastlayer.report.plot import save_confusion_png
from lastlayer.runtime import Interpreter


@pytest.fixture(scope="module")
def trained(tmp_path_factory, datasets_dir):
    root = tmp_path_factory.mktemp("eval")
    for split, files in (("train", slice(0, 16)), ("test", slice(16, 24))):
        for name in ("daisy", "roses", "tulips"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for src in sorted((datasets_dir / "flowers" / name).iterdir())[files]:
                (folder / src.name).write_bytes(src.read_bytes())
    assert main(["train", str(root / "train"), "-o", str(root / "bp"), "--solver", "sgd", "--epochs", "40", "--val-ratio", "0", "--json"]) == 0
    assert main(["imprint", str(root / "train"), "-o", str(root / "imp"), "--test-ratio", "0", "--json"]) == 0
    return root


def test_evaluate_report_matches_an_independent_count(capsys, trained):
    capsys.readouterr()
    model = trained / "bp" / "model.tflite"
    assert main(["evaluate", str(model), str(trained / "test"), "--report-dir", str(trained / "report"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    dataset = load_dataset(trained / "test")
    interpreter = Interpreter(model)
    predicted = np.array([interpreter.run_file(p).argmax() for p in dataset.paths])
    assert report["top1_accuracy"] == pytest.approx(np.mean(predicted == dataset.labels))
    matrix = np.array(report["confusion_matrix"])
    for i in range(3):
        for j in range(3):
            assert matrix[i, j] == np.sum((dataset.labels == i) & (predicted == j))
    recall = report["per_class"]["roses"]["recall"]
    assert recall == pytest.approx(np.mean(predicted[dataset.labels == 1] == 1))
    assert len(report["misclassified"]) == int(np.sum(predicted != dataset.labels))
    assert report["mean_latency_ms"] > 0 and report["top5_accuracy"] is None  # 3 classes: top-5 would always be 1
    saved = json.loads((trained / "report" / "report.json").read_text())
    assert saved["top1_accuracy"] == report["top1_accuracy"]
    png = Image.open(trained / "report" / "confusion.png")
    assert png.format == "PNG" and png.size[0] >= 3 * 34 and png.size[1] >= 3 * 34


def test_evaluate_compare_and_text_output(capsys, trained):
    capsys.readouterr()
    bp, imp = trained / "bp" / "model.tflite", trained / "imp" / "model.tflite"
    assert main(["evaluate", str(bp), str(trained / "test"), "--compare", str(bp), "--json"]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["agreement"] == 1.0 and same["disagreements"] == [] and same["max_score_difference"] == 0.0
    assert main(["evaluate", str(bp), str(trained / "test"), "--compare", str(imp)]) == 0
    text = capsys.readouterr().out
    assert "precision" in text and "agreement" in text and "roses" in text


def test_evaluate_rejects_classes_the_model_does_not_know(capsys, trained, tmp_path):
    other = tmp_path / "other" / "cactus"
    other.mkdir(parents=True)
    (other / "x.jpg").write_bytes(next((trained / "test" / "roses").iterdir()).read_bytes())
    assert main(["evaluate", str(trained / "bp" / "model.tflite"), str(other.parent)]) == 1
    assert "cactus" in capsys.readouterr().err


def test_report_with_classes_outside_the_data_and_png_size(tmp_path):
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    report = classification_report(np.array([0, 1, 1]), scores, ["a", "b"], class_ids=[0, 1])
    assert report["columns"] == ["a", "b", "(other class)"] and report["confusion_matrix"] == [[1, 0, 0], [0, 1, 1]]
    assert report["per_class"]["b"] == {"precision": 1.0, "recall": 0.5, "support": 2}
    path = save_confusion_png(report, tmp_path / "c.png")
    assert Image.open(path).format == "PNG"


def test_demo_end_to_end_small(tmp_path, models_dir):
    lines = []
    summary = run_demo(tmp_path / "demo", test_per_class=3, log=lines.append)
    out = tmp_path / "demo"
    for sub in ("imprinted", "imprinted_plus_one", "backprop"):
        assert (out / sub / "model.tflite").stat().st_size > 1_000_000 and (out / sub / "labels.txt").exists()
    labels = (out / "imprinted_plus_one" / "labels.txt").read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in labels] == FIRST_CLASSES + [LATER_CLASS]
    assert len(list((out / "data" / "test").rglob("*.png"))) == 18 and len(list((out / "data" / "train").rglob("*.png"))) == 30
    rows = summary["rows"]
    assert [r["classes"] for r in rows] == [5, 6, 6, 6]
    assert all(0.5 <= r["test_accuracy"] <= 1.0 for r in rows)  # 6 classes: chance is 0.17
    assert rows[3]["test_accuracy"] == pytest.approx(rows[1]["test_accuracy"], abs=0.1)  # saved file ~ in-memory scores
    assert rows[1]["old_classes_accuracy"] is not None and any("test acc" in line for line in lines)
    assert (out / "imprinted_plus_one" / "evaluation" / "confusion.png").exists()
    first = (out / "data" / "train" / "gear" / "gear_000.png").read_bytes()
    run_demo(tmp_path / "again", test_per_class=3, log=lambda line: None)
    assert (tmp_path / "again" / "data" / "train" / "gear" / "gear_000.png").read_bytes() == first  # deterministic
