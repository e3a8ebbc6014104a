"""Every model ``imprint`` and ``train`` write carries the unknown rule derived from their photos (or says why not).

Each expected rule is fitted here, independently, on the extractor's embeddings of the same photos.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from jobs.conftest import link_dataset
from lastlayer.cli import main
from lastlayer.files.datasets import load_dataset, stratified_split
from lastlayer.jobs.classify import classify_files
from lastlayer.jobs.imprint import ImprintOptions, imprint
from lastlayer.jobs.train import TrainOptions, train
from lastlayer.jobs.unknown import unknown_check
from lastlayer.learn.unknown import UnknownRule
from lastlayer.model.file import ModelFile
from lastlayer.model.unknown import read_unknown_rule
from lastlayer.runtime import Interpreter, extract_embeddings

from conftest import EXTRACTOR

pytestmark = pytest.mark.shared
QUIET = {"progress": False}
FLOWERS = ("daisy", "dandelion", "roses")


@pytest.fixture(scope="module")
def photos(datasets_dir, tmp_path_factory, model_file):
    """Flowers to teach (3 x 12), other flowers of those classes, clothing photos (of no class), and an embedding of each."""
    root = tmp_path_factory.mktemp("rule_written")
    taught = link_dataset(datasets_dir / "flowers", root / "taught", {name: 12 for name in FLOWERS})
    extra = link_dataset(datasets_dir / "flowers", root / "extra_all", {"tulips": 8})
    clothing = sorted((datasets_dir / "clothing" / "test" / "shoes").iterdir())[:8]
    extractor = Interpreter(ModelFile.read(model_file(EXTRACTOR)))
    paths = sorted(taught.rglob("*.jpg"))
    X = extract_embeddings(extractor, paths, progress=False)
    y = np.array([FLOWERS.index(p.parent.name) for p in paths])
    return {"taught": taught, "extra": extra, "clothing": clothing, "X": X, "y": y, "paths": paths,
            "X_extra": extract_embeddings(extractor, sorted((extra / "tulips").iterdir()), progress=False)}


def _stored(path) -> UnknownRule | None:
    stored = read_unknown_rule(ModelFile.read(path))
    return None if stored is None else UnknownRule.from_dict(stored.rule)


def test_imprint_stores_the_rule_of_its_photos(photos, tmp_path):
    result = imprint(photos["taught"], tmp_path / "out", options=ImprintOptions(test_ratio=0, **QUIET))
    expected = UnknownRule.fit(photos["X"], photos["y"])
    assert _stored(result.model_path) == expected
    section = result.report["unknown_rule"]
    assert section["stored"] and section["threshold"] == pytest.approx(expected.threshold) and section["examples"] == 36
    assert f"; unknown below similarity {expected.threshold:.3f}" in result.headline
    answered = classify_files(result.model_path, photos["clothing"]).results
    assert [r.unknown for r in answered] == (expected.similarity(_embed(photos["clothing"])) < expected.threshold).tolist()
    assert sum(r.unknown for r in answered) >= 6  # shoes are no flowers


def _embed(paths):
    from lastlayer.model.zoo import open_model

    return extract_embeddings(Interpreter(open_model(EXTRACTOR)), paths, progress=False)


def test_imprint_counts_held_out_photos_answered_unknown(photos, tmp_path):
    result = imprint(photos["taught"], tmp_path / "out", options=ImprintOptions(**QUIET))
    report = result.report
    section = report["unknown_rule"]["held_out_answered_unknown"]
    assert section["of"] == report["test_images"] == 9
    dataset = load_dataset(photos["taught"])
    _, held_out = stratified_split(dataset.labels, 0.25, 0)  # the job's split
    answered = classify_files(result.model_path, [dataset.paths[i] for i in held_out]).results
    assert section["count"] == sum(r.unknown for r in answered)
    assert f"{section['count']} / 9 held-out photos answered unknown, 95 % interval" in result.headline


def test_no_unknown_and_too_few_photos_store_no_rule_and_say_why(photos, few_photos, tmp_path, capsys):
    off = imprint(photos["taught"], tmp_path / "off", options=ImprintOptions(unknown=False, **QUIET))
    assert _stored(off.model_path) is None and off.report["unknown_rule"]["note"] == "turned off (--no-unknown)"
    assert off.headline.endswith("; no unknown rule: turned off (--no-unknown)")
    one = imprint(few_photos(1), tmp_path / "one", options=ImprintOptions(**QUIET))  # one photo per class: nothing to leave out
    assert _stored(one.model_path) is None and not one.report["unknown_rule"]["stored"]
    assert "no unknown rule: too few examples" in one.headline
    assert main(["imprint", str(photos["taught"]), "-o", str(tmp_path / "cli"), "--no-unknown", "--json"]) == 0
    assert "no unknown rule" in json.loads(capsys.readouterr().out)["headline"] and _stored(tmp_path / "cli" / "model.tflite") is None


def test_resume_continues_the_stored_rule(photos, tmp_path):
    first = link_dataset(photos["taught"], tmp_path / "first", {"daisy": 12, "dandelion": 12})
    base = imprint(first, tmp_path / "a", options=ImprintOptions(test_ratio=0, **QUIET))
    resumed = imprint(photos["extra"], tmp_path / "b", options=ImprintOptions(test_ratio=0, **QUIET), resume=base.model_path)
    earlier = _stored(base.model_path)
    assert _stored(resumed.model_path) == earlier.partial_fit(photos["X_extra"], np.full(8, 2))
    assert resumed.report["unknown_rule"]["continued_from"] == str(base.model_path)
    without = imprint(first, tmp_path / "c", options=ImprintOptions(test_ratio=0, unknown=False, **QUIET))
    fresh = imprint(photos["extra"], tmp_path / "d", options=ImprintOptions(test_ratio=0, **QUIET), resume=without.model_path)
    rule = _stored(fresh.model_path)  # a model without a rule: the rule judges only this run's class
    assert rule.examples == (0, 0, 8) and rule == UnknownRule.fit(photos["X_extra"], np.full(8, 2), num_classes=3)


def test_kept_classes_carry_a_rule_for_the_new_classes_only(datasets_dir, photos, tmp_path, model_file):
    classifier = model_file("mobilenet_v1_0.25_128_quant.tflite")
    clothing = link_dataset(datasets_dir / "clothing" / "train", tmp_path / "clothing", {"dress": 8, "hat": 8})
    result = imprint(clothing, tmp_path / "kept", model=classifier, options=ImprintOptions(keep_classes=True, test_ratio=0, **QUIET))
    rule = _stored(result.model_path)
    extractor = Interpreter(ModelFile.read(classifier).extractor)
    X = extract_embeddings(extractor, sorted(clothing.rglob("*.jpg")), progress=False)
    assert rule == UnknownRule.fit(X, np.repeat([1001, 1002], 8), num_classes=1003) and rule.examples[:1001] == (0,) * 1001
    check = unknown_check(ModelFile.read(result.model_path))
    assert check is not None and check.classes == 1003
    flowers = photos["paths"][::4]
    answered = classify_files(result.model_path, flowers).results
    expected = ~rule.accepts(extract_embeddings(extractor, flowers, progress=False), predicted=[r.closest.id for r in answered])
    assert [r.unknown for r in answered] == expected.tolist()
    assert any(r.closest.id >= 1001 for r in answered) or not any(expected)
    more = link_dataset(datasets_dir / "clothing" / "train", tmp_path / "more", {"shoes": 4})
    dropped = imprint(more, tmp_path / "dropped", options=ImprintOptions(test_ratio=0, unknown=False, **QUIET),
                      resume=result.model_path)
    assert _stored(dropped.model_path) is None  # no stale rule for 1003 classes in a model of 1004
    assert unknown_check(ModelFile.read(dropped.model_path)) is None
    grown = imprint(more, tmp_path / "grown", options=ImprintOptions(test_ratio=0, **QUIET), resume=result.model_path)
    X_more = extract_embeddings(extractor, sorted(more.rglob("*.jpg")), progress=False)
    assert _stored(grown.model_path) == rule.partial_fit(X_more, np.full(4, 1003))


def test_train_stores_the_rule_of_the_photos_its_head_learned_from(photos, tmp_path):
    result = train(photos["taught"], tmp_path / "t", options=TrainOptions(**QUIET))
    assert result.report["refit_on_all_photos"]
    assert _stored(result.model_path) == UnknownRule.fit(photos["X"], photos["y"])
    section = result.report["unknown_rule"]
    assert section["held_out_answered_unknown"]["of"] == result.report["val_images"] > 0
    assert "validation " in result.headline and " right, 95 % interval " in result.headline
    off = train(photos["taught"], tmp_path / "off", options=TrainOptions(unknown=False, **QUIET))
    assert _stored(off.model_path) is None and "no unknown rule" in off.headline
