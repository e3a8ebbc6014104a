"""The imprint job: shots, fine-tuning, scale, keep-classes, resume and the held-out split each have their effect."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jobs.conftest import link_dataset
from lastlayer.errors import ModelError, TrainingError
from lastlayer.jobs.imprint import ImprintOptions, imprint
from lastlayer.jobs.train import TrainOptions, train
from lastlayer.learn.keep import SCALE_RANGE
from lastlayer.model.export import read_imprinting_layer
from lastlayer.model.file import ModelFile, ModelKind
from lastlayer.model.imprinting import find_structure
from lastlayer.model.io import save_model
from lastlayer.model.keep import read_class_layer
from lastlayer.model.names import operator_name
from lastlayer.model.surgery import locate_embedding
from lastlayer.report.intervals import clopper_pearson

from conftest import CLASSIFIER_V2
from graphs import make_cosine_classifier

pytestmark = pytest.mark.shared
QUIET = {"progress": False}


def _rows(path) -> np.ndarray:
    return read_imprinting_layer(ModelFile.read(path)).weights


def test_shots_limit_the_images_per_class(flowers_small, tmp_path):
    two = imprint(flowers_small, tmp_path / "a", options=ImprintOptions(shots=2, **QUIET)).report
    every = imprint(flowers_small, tmp_path / "b", options=ImprintOptions(**QUIET)).report
    assert set(two["shots"].values()) == {2} and two["train_images"] == 6
    assert set(every["shots"].values()) == {9} and every["train_images"] == 27 and every["test_images"] == 9


def test_finetune_changes_the_rows_and_lowers_the_loss(flowers_small, tmp_path):
    plain = imprint(flowers_small, tmp_path / "a", options=ImprintOptions(**QUIET))
    tuned = imprint(flowers_small, tmp_path / "b", options=ImprintOptions(finetune=True, **QUIET))
    before, after = tuned.report["finetune_loss"]
    assert after < before and plain.report["finetune_loss"] is None
    difference = np.abs(_rows(plain.model_path) - _rows(tuned.model_path)).max()
    assert difference > 0.02


def test_scale_is_written_into_the_model(flowers_small, tmp_path):
    result = imprint(flowers_small, tmp_path / "a", options=ImprintOptions(scale=20.0, **QUIET))
    assert find_structure(ModelFile.read(result.model_path).tree).scale_factor == pytest.approx(20.0)
    default = imprint(flowers_small, tmp_path / "b", options=ImprintOptions(**QUIET))
    assert find_structure(ModelFile.read(default.model_path).tree).scale_factor == pytest.approx(48.0)


def test_test_ratio_zero_imprints_every_photo_and_reports_no_accuracy(flowers_small, tmp_path):
    report = imprint(flowers_small, tmp_path / "a", options=ImprintOptions(test_ratio=0, **QUIET)).report
    assert report["test_images"] == 0 and report["test_accuracy"] is None and report["train_images"] == 36


def test_keep_classes_keeps_a_cosine_classifiers_rows(flowers_small, tmp_path, model_file):
    classifier = ModelFile.read(model_file("mobilenet_v1_0.25_128_quant.tflite")).copy_tree()
    cosine = save_model(make_cosine_classifier(classifier), tmp_path / "cosine.tflite")
    kept = imprint(flowers_small, tmp_path / "a", model=cosine, options=ImprintOptions(keep_classes=True, **QUIET))
    fresh = imprint(flowers_small, tmp_path / "b", model=cosine, options=ImprintOptions(**QUIET))
    assert kept.report["num_classes"] == 1001 + 3 and fresh.report["num_classes"] == 3
    assert list(kept.report["new_or_extended_classes"].values()) == [1001, 1002, 1003]


@pytest.fixture
def clothing_small(datasets_dir, tmp_path):
    """3 clothing classes x 12 photos (no class named like an ImageNet class)."""
    return link_dataset(datasets_dir / "clothing" / "train", tmp_path / "clothing_small", {"dress": 12, "hat": 12, "shoes": 12})


def _class_layer_bytes(path) -> list[bytes]:
    tree = ModelFile.read(path).tree
    graph = tree.subgraphs[0]
    op = graph.operators[locate_embedding(tree).class_layer]
    return [bytes(np.asarray(tree.buffers[graph.tensors[i].buffer].data, np.uint8)) for i in op.inputs[1:]]


def _ops(path) -> list[str]:
    tree = ModelFile.read(path).tree
    return [operator_name(tree.operatorCodes[op.opcodeIndex]) for op in tree.subgraphs[0].operators]


def test_keep_classes_of_an_ordinary_classifier_appends_after_its_own(clothing_small, tmp_path, model_file):
    classifier = model_file("mobilenet_v1_0.25_128_quant.tflite")
    lines: list[str] = []
    kept = imprint(clothing_small, tmp_path / "a", model=classifier, options=ImprintOptions(keep_classes=True, shots=5, **QUIET),
                   log=lines.append)
    fresh = imprint(clothing_small, tmp_path / "b", model=classifier, options=ImprintOptions(shots=5, **QUIET))
    report = kept.report
    assert report["num_classes"] == 1004 and fresh.report["num_classes"] == 3
    assert report["new_or_extended_classes"] == {"dress": 1001, "hat": 1002, "shoes": 1003}
    assert _class_layer_bytes(kept.model_path) == _class_layer_bytes(classifier)  # rows and biases bit-exact
    original = ModelFile.read(classifier).label_list(1001)
    assert ModelFile.read(kept.model_path).label_list(1004) == original + ["dress", "hat", "shoes"]
    assert kept.labels_path.read_text().splitlines()[1001:] == ["1001 dress", "1002 hat", "1003 shoes"]
    section = report["keep_classes"]
    assert section["original_classes"] == 1001 and section["new_classes"] == 3 and section["shots_total"] == 15
    assert [s["label"] for s in section["shots"]] == ["dress", "hat", "shoes"] and report["scale_factor"] is None
    assert list(section["thresholds"]) == ["dress", "hat", "shoes"] and all(0 < t < 1 for t in section["thresholds"].values())
    assert SCALE_RANGE[0] <= section["scale"] <= SCALE_RANGE[1] and section["steepness"] >= 1
    assert section["joined_logit_range"][1] > section["logit_range"][1]  # moved up to leave the new logits room
    assert f"the original ones still win {section['shots_kept_by_original']} of the 15 photos imprinted" in kept.headline
    assert all(any(w in line for line in lines) for w in section["warnings"])
    assert report["test_images"] == 21 and report["test_accuracy"] is not None and report["leave_one_out"]["photos"] == 15


def test_keep_classes_names_the_original_classes_from_a_label_file(clothing_small, tmp_path, model_file):
    names = tmp_path / "names.txt"
    names.write_text("".join(f"{i} thing{i}\n" for i in range(1000)) + "1000 hat\n")
    with pytest.raises(TrainingError, match="'hat' is a base class"):
        imprint(clothing_small, tmp_path / "a", model=model_file("mobilenet_v1_0.25_128_quant.tflite"),
                options=ImprintOptions(keep_classes=True, labels=str(names), **QUIET))
    names.write_text("".join(f"{i} thing{i}\n" for i in range(1001)))
    result = imprint(clothing_small, tmp_path / "b", model=model_file("mobilenet_v1_0.25_128_quant.tflite"),
                     options=ImprintOptions(keep_classes=True, labels=str(names), shots=2, **QUIET))
    assert ModelFile.read(result.model_path).label_list(1004)[999:] == ["thing999", "thing1000", "dress", "hat", "shoes"]
    assert not (tmp_path / "a").exists()
    with pytest.raises(ModelError, match="--keep-classes") as info:  # without keeping classes there are none to name
        imprint(clothing_small, tmp_path / "c", options=ImprintOptions(labels=str(names), **QUIET))
    assert info.value.subject == "labels" and not (tmp_path / "c").exists()


@pytest.mark.parametrize(("option", "subject"), [({"finetune": True}, "finetune"), ({"scale": 20.0}, "scale")])
def test_keep_classes_refuses_imprinting_only_options_before_any_output(clothing_small, tmp_path, option, subject):
    with pytest.raises(TrainingError, match="leave it out") as info:
        imprint(clothing_small, tmp_path / "a", model=CLASSIFIER_V2, options=ImprintOptions(keep_classes=True, **option, **QUIET))
    assert info.value.subject == subject and not (tmp_path / "a").exists()


def test_resume_after_keep_adds_classes_and_shots_and_keeps_the_original_layer(clothing_small, tmp_path, model_file):
    classifier = model_file("mobilenet_v1_0.25_128_quant.tflite")
    first = link_dataset(clothing_small, tmp_path / "first", {"dress": 3, "hat": 3})
    later = link_dataset(clothing_small, tmp_path / "later", {"hat": 6, "shoes": 4})
    base = imprint(first, tmp_path / "a", model=classifier, options=ImprintOptions(keep_classes=True, test_ratio=0, **QUIET))
    lines: list[str] = []
    resumed = imprint(later, tmp_path / "b", options=ImprintOptions(test_ratio=0, **QUIET), resume=base.model_path,
                      log=lines.append)
    assert resumed.report["skipped_already_imprinted"] == 3 and any("skipped 3 photo(s)" in line for line in lines)
    assert resumed.report["new_or_extended_classes"] == {"hat": 1002, "shoes": 1003}
    state = read_class_layer(ModelFile.read(resumed.model_path)).state
    assert [(c["label"], c["count"]) for c in state["classes"]] == [("dress", 3), ("hat", 6), ("shoes", 4)]
    assert sum(len(v) for v in state["digests"].values()) == 13
    assert _class_layer_bytes(resumed.model_path) == _class_layer_bytes(classifier)
    assert _ops(resumed.model_path).count("CONCATENATION") == 1
    original_name = ModelFile.read(classifier).label_list(1001)[5]
    with pytest.raises(TrainingError, match="base class"):  # the original classes stay fixed
        imprint(_named_like_original(clothing_small, tmp_path, original_name), tmp_path / "c", resume=resumed.model_path,
                options=ImprintOptions(test_ratio=0, **QUIET))


def _named_like_original(source, tmp_path, name: str):
    folder = tmp_path / "named" / name
    folder.mkdir(parents=True)
    for image in sorted((source / "dress").iterdir())[:2]:
        (folder / image.name).symlink_to(image.resolve())
    return tmp_path / "named"


def test_resume_adds_a_class_without_the_old_photos(flowers_small, tmp_path):
    names = sorted(p.name for p in flowers_small.iterdir())
    first = tmp_path / "first"
    for name in names[:2]:
        (first / name).mkdir(parents=True)
        for image in (flowers_small / name).iterdir():
            (first / name / image.name).symlink_to(image.resolve())
    later = tmp_path / "later"
    (later / names[2]).mkdir(parents=True)
    for image in (flowers_small / names[2]).iterdir():
        (later / names[2] / image.name).symlink_to(image.resolve())
    base = imprint(first, tmp_path / "a", options=ImprintOptions(**QUIET))
    resumed = imprint(later, tmp_path / "b", options=ImprintOptions(**QUIET), resume=base.model_path)
    layer = read_imprinting_layer(ModelFile.read(resumed.model_path))
    assert layer.labels == names and layer.state["shots"] == {"0": 9, "1": 9, "2": 9}
    assert np.abs(layer.weights[:2] - _rows(base.model_path)).max() < 0.02  # the old classes are unchanged


def test_resuming_a_backprop_model_says_why_not(flowers_small, tmp_path):
    trained = train(flowers_small, tmp_path / "t", options=TrainOptions(num_iter=5, progress=False, print_every=0))
    assert ModelFile.read(trained.model_path).kind is ModelKind.CLASSIFIER
    with pytest.raises(ModelError, match="not an imprinted model") as info:
        imprint(flowers_small, tmp_path / "b", resume=trained.model_path, options=ImprintOptions(**QUIET))
    assert info.value.subject == "resume"


@pytest.mark.parametrize("photos", [1, 2, 5])
def test_few_photos_are_all_imprinted_and_accuracy_says_where_it_comes_from(few_photos, tmp_path, photos):
    data = few_photos(photos)
    lines: list[str] = []
    result = imprint(data, tmp_path / "out", options=ImprintOptions(shots=photos, **QUIET), log=lines.append)
    report = result.report
    assert set(report["shots"].values()) == {photos} and report["test_images"] == 0 and report["embeddings_from_cache"] == 0
    assert report["images"] == 3 * photos and any("no photos held out" in line for line in lines)
    if photos == 1:
        assert report["leave_one_out"]["accuracy"] is None and "accuracy not available" in result.headline
    else:
        loo = report["leave_one_out"]
        assert loo["photos"] == 3 * photos and 0 <= loo["right"] <= loo["photos"]
        low, high = clopper_pearson(loo["right"], loo["photos"])
        assert f"leave-one-out {loo['right']} / {3 * photos} right, 95 % interval {math.floor(low * 100) / 100:.2f}-" \
               f"{math.ceil(high * 100) / 100:.2f} (no photos held out)" in result.headline


def test_photos_not_used_as_shots_are_the_test_set(flowers_small, tmp_path):
    result = imprint(flowers_small, tmp_path / "a", options=ImprintOptions(shots=2, test_ratio=0.25, **QUIET))
    report = result.report
    assert report["train_images"] == 6 and report["test_images"] == 30 and report["images"] == 36
    test = report["test"]
    assert test["samples"] == 30 and f"test {test['top1_right']} / 30 right, 95 % interval" in result.headline
    assert "on photos not used as shots" in result.headline
    one = imprint(flowers_small, tmp_path / "b", options=ImprintOptions(shots=1, **QUIET))
    assert one.report["test_images"] == 33 and "accuracy not available" not in one.headline


def test_resume_skips_photos_already_imprinted(flowers_small, tmp_path):
    names = sorted(p.name for p in flowers_small.iterdir())
    first_two = tmp_path / "two"
    first_two.mkdir()
    for name in names[:2]:
        (first_two / name).symlink_to(flowers_small / name, target_is_directory=True)
    first = imprint(first_two, tmp_path / "a", options=ImprintOptions(test_ratio=0, **QUIET))
    lines: list[str] = []
    again = imprint(flowers_small, tmp_path / "b", options=ImprintOptions(test_ratio=0, **QUIET), resume=first.model_path,
                    log=lines.append)
    assert again.report["skipped_already_imprinted"] == 24 and any("skipped 24 photo(s)" in line for line in lines)
    assert again.report["images"] == 12  # only the new class's photos were embedded
    layer = read_imprinting_layer(ModelFile.read(again.model_path))
    assert layer.state["shots"] == {"0": 12, "1": 12, "2": 12} and sum(len(v) for v in layer.state["digests"].values()) == 36
    with pytest.raises(TrainingError, match="already imprinted"):
        imprint(flowers_small, tmp_path / "c", options=ImprintOptions(test_ratio=0, **QUIET), resume=again.model_path)
