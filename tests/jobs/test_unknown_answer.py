"""The unknown answer where a model file is used: classify (API and CLI) and evaluate, with the override and the off switch.

The model is built here: imprinting on 12 photos of 3 flower classes, with a rule fitted on the
same embeddings. Every expectation is computed independently from the extractor's embeddings.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs.conftest import link_dataset
from lastlayer.cli import main
from lastlayer.jobs.classify import classify_files
from lastlayer.jobs.evaluate import EvaluateOptions, evaluate
from lastlayer.learn.imprinting import ImprintingHead
from lastlayer.learn.unknown import UnknownRule
from lastlayer.model.export import write_head
from lastlayer.model.file import ModelFile
from lastlayer.runtime import Interpreter, extract_embeddings

from conftest import EXTRACTOR

FLOWERS = ("daisy", "roses", "tulips")


@pytest.fixture(scope="module")
def world(tmp_path_factory, model_file, datasets_dir):
    """A model with a rule (and the same without), held-out flower photos, clothing photos, embeddings of all."""
    root = tmp_path_factory.mktemp("unknown")
    base = ModelFile.read(model_file(EXTRACTOR))
    extractor = Interpreter(base)
    taught = [p for name in FLOWERS for p in sorted((datasets_dir / "flowers" / name).iterdir())[:12]]
    y = np.repeat(np.arange(3), 12)
    X = extract_embeddings(extractor, taught, progress=False)
    head = ImprintingHead().fit(X, y, labels=list(FLOWERS))
    rule = UnknownRule.fit(X, y)
    (root / "rule.tflite").write_bytes(write_head(base, rule.attach(head.export())))
    (root / "plain.tflite").write_bytes(write_head(base, head.export()))
    known = link_dataset(datasets_dir / "flowers", root / "known_all", {name: 20 for name in FLOWERS})
    for name in FLOWERS:  # keep the 8 photos after the 12 taught ones
        for link in sorted((known / name).iterdir())[:12]:
            link.unlink()
    others = root / "others"
    others.mkdir()
    for image in sorted((datasets_dir / "clothing" / "test" / "shoes").iterdir())[:10] + \
            sorted((datasets_dir / "clothing" / "test" / "hat").iterdir())[:10]:
        (others / image.name).symlink_to(image)
    known_paths = sorted(known.rglob("*.jpg"))
    other_paths = sorted(others.iterdir())
    embeddings = {str(p): e for p, e in zip(known_paths + other_paths, extract_embeddings(extractor, known_paths + other_paths, progress=False))}
    return {"root": root, "rule": rule, "known": known, "known_paths": known_paths, "others": others, "other_paths": other_paths,
            "embeddings": embeddings, "model": root / "rule.tflite", "plain": root / "plain.tflite"}


def _expected(world, paths, threshold=None):
    X = np.stack([world["embeddings"][str(p)] for p in paths])
    similarity = world["rule"].similarity(X)
    return similarity, similarity < (world["rule"].threshold if threshold is None else threshold)


def test_classify_answers_unknown_as_the_rule_says(world):
    paths = world["known_paths"] + world["other_paths"]
    result = classify_files(world["model"], paths, top_k=3)
    similarity, unknown = _expected(world, paths)
    assert [r.unknown for r in result.results] == unknown.tolist()
    np.testing.assert_allclose([r.similarity for r in result.results], similarity, atol=1e-5)
    assert result.unknown_rule["source"] == "model" and result.unknown_rule["threshold"] == pytest.approx(world["rule"].threshold)
    known, other = unknown[:len(world["known_paths"])], unknown[len(world["known_paths"]):]
    assert other.mean() >= 0.8 and known.mean() <= 0.25  # clothing is no flower; unseen flowers mostly are
    for entry in result.results:  # the ranked classes are kept either way
        assert 1 <= len(entry.classes) <= 3 and entry.closest.label == entry.classes[0][0]


def test_without_the_rule_nothing_is_unknown(world):
    paths = world["other_paths"]
    for result in (classify_files(world["plain"], paths), classify_files(world["model"], paths, unknown=False)):
        assert [r.unknown for r in result.results] == [None] * len(paths) and result.unknown_rule is None
        assert all(r.similarity is None for r in result.results)
    ranked = [r.classes for r in classify_files(world["model"], paths, unknown=False).results]
    assert ranked == [r.classes for r in classify_files(world["model"], paths).results]  # the scores do not change


def test_the_override_moves_the_threshold(world):
    paths = world["known_paths"] + world["other_paths"]
    middle = float(np.median(_expected(world, paths)[0]))
    for threshold in (-1.0, middle, 1.01):
        result = classify_files(world["model"], paths, unknown_threshold=threshold)
        assert [r.unknown for r in result.results] == _expected(world, paths, threshold)[1].tolist()
        assert result.unknown_rule["source"] == "override" and result.unknown_rule["threshold"] == pytest.approx(threshold)
    assert not any(r.unknown for r in classify_files(world["model"], paths, unknown_threshold=-1.0).results)
    assert all(r.unknown for r in classify_files(world["model"], paths, unknown_threshold=1.01).results)


def test_classify_command_text_and_json(world, capsys):
    image, flower = world["other_paths"][0], world["known_paths"][0]
    assert main(["classify", "-m", str(world["model"]), str(image), str(flower), "--unknown-threshold", "0.999", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["unknown"] for r in data["results"]] == [True, True] and data["unknown_rule"]["source"] == "override"
    assert main(["classify", "-m", str(world["model"]), str(image), "--unknown-threshold", "0.999"]) == 0
    top = data["results"][0]["classes"][0]
    assert capsys.readouterr().out.splitlines() == [str(image), f"  unknown (closest: {top['label']} {top['score']:.2f})"]
    assert main(["classify", "-m", str(world["model"]), str(image), "--no-unknown", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["unknown"] is None
    with pytest.raises(SystemExit) as stopped:
        main(["classify", "-m", str(world["model"]), str(image), "--no-unknown", "--unknown-threshold", "0.5"])
    assert stopped.value.code == 2
    assert main(["classify", "-m", str(world["plain"]), str(image), "--unknown-threshold", "0.5"]) == 1
    assert "carries no unknown rule" in capsys.readouterr().err


def _independent_report(world, threshold=None):
    model = Interpreter(world["model"])
    known = world["known_paths"]
    truth = np.array([FLOWERS.index(p.parent.name) for p in known])
    predicted = np.array([model.run_file(p).argmax() for p in known])
    _, unknown = _expected(world, known, threshold)
    _, other_unknown = _expected(world, world["other_paths"], threshold)
    return int(np.sum((predicted == truth) & ~unknown)), float(np.mean(predicted == truth)), int(other_unknown.sum()), int(unknown.sum())


def test_evaluate_counts_accepted_and_right_and_rejected_others(world, tmp_path):
    middle = float(np.median(_expected(world, world["known_paths"])[0]))  # rejects half the known photos, right ones among them
    report = evaluate(world["model"], world["known"], EvaluateOptions(unknown_data=world["others"], unknown_threshold=middle,
                                                                      progress=False)).report
    right, plain, rejected, answered_unknown = _independent_report(world, middle)
    assert report["unknown"]["known"]["accuracy"]["count"] == right < round(plain * 24)
    assert report["unknown"]["known"]["answered_unknown"] == answered_unknown == 12
    assert report["unknown"]["other"]["rejected"]["count"] == rejected
    report = evaluate(world["model"], world["known"], EvaluateOptions(unknown_data=world["others"], report_dir=tmp_path / "r",
                                                                      progress=False)).report
    right, plain, rejected, answered_unknown = _independent_report(world)
    section = report["unknown"]
    assert section["known"]["accuracy"]["count"] == right and section["known"]["accuracy"]["of"] == 24
    assert section["known"]["accuracy_without_rule"] == pytest.approx(plain) == pytest.approx(report["top1_accuracy"])
    assert section["known"]["answered_unknown"] == answered_unknown == len(section["known"]["answered_unknown_files"])
    assert section["other"]["rejected"]["count"] == rejected and section["other"]["images"] == 20
    low, high = section["known"]["accuracy"]["interval"]
    assert low <= right / 24 <= high
    curve = section["curve"]
    assert curve["known_accuracy"][0] == pytest.approx(plain) and curve["other_rejected"][0] == 0.0
    assert curve["other_rejected"][-1] == 1.0 and curve["known_rejected"][-1] == 1.0
    assert Image.open(section["curve_png"]).format == "PNG" and Path(section["curve_png"]).parent == tmp_path / "r"
    assert json.loads((tmp_path / "r" / "report.json").read_text())["unknown"]["curve_png"] == section["curve_png"]


def test_evaluate_override_off_switch_and_stale_curve(world, tmp_path, capsys):
    model, data, others, out = str(world["model"]), str(world["known"]), str(world["others"]), tmp_path / "r"
    assert main(["evaluate", model, data, "--unknown", others, "--unknown-threshold", "-1", "--report-dir", str(out), "--json"]) == 0
    section = json.loads(capsys.readouterr().out)["unknown"]
    right, plain, *_ = _independent_report(world, -1.0)
    assert section["source"] == "override" and section["other"]["rejected"]["count"] == 0 and section["known"]["accuracy"]["count"] == right
    assert (out / "unknown.png").exists()
    assert main(["evaluate", model, data, "--no-unknown", "--report-dir", str(out), "--json"]) == 0
    assert "unknown" not in json.loads(capsys.readouterr().out) and not (out / "unknown.png").exists()
    assert main(["evaluate", model, data, "--unknown", others]) == 0
    text = capsys.readouterr().out
    assert "known-class accuracy" in text and "right, 95 % interval" in text and "rejected as unknown, 95 % interval" in text
    with pytest.raises(SystemExit) as stopped:
        main(["evaluate", model, data, "--unknown", others, "--no-unknown"])
    assert stopped.value.code == 2
    assert main(["evaluate", str(world["plain"]), data, "--unknown", others]) == 1
    assert "carries no unknown rule" in capsys.readouterr().err
    assert main(["evaluate", model, data, "--unknown", str(tmp_path / "nowhere")]) == 1
    assert "(--unknown)" in capsys.readouterr().err
