"""A model is analysed once: its kind and parts are found once per ModelFile, its extractor is cut once, and jobs reuse both."""

from __future__ import annotations

import collections
import dataclasses

import pytest

from lastlayer.images.render import write_image_folder
from lastlayer.jobs.imprint import ImprintOptions, imprint
from lastlayer.jobs.train import TrainOptions, train
from lastlayer.model import imprinting, surgery
from lastlayer.model.export import extractor_model, extractor_tree, output_type_of
from lastlayer.model.file import ModelKind
from lastlayer.model.zoo import open_model

from conftest import EXTRACTOR

CLASSIFIER = "mobilenet_v1_0.25_128_quant.tflite"


@pytest.fixture
def counted(monkeypatch):
    """How often the graph is searched for Coral's structure or a class layer, and how often a tree is cut."""
    counts: collections.Counter[str] = collections.Counter()

    def counting(module, name):
        real = getattr(module, name)

        def wrapper(*args, **kwargs):
            counts[name] += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)

    counting(imprinting, "_inspect")
    counting(surgery, "extract_segment")
    counting(surgery, "_class_layer_behind")
    return counts


@pytest.fixture
def parts(tmp_path):
    for kind in ("gear", "washer", "nut"):
        write_image_folder(tmp_path / "parts" / kind, [(kind, 5)], size=(96, 72))
    write_image_folder(tmp_path / "more" / "bracket", [("bracket", 5)], size=(96, 72))
    return tmp_path


def test_the_analysis_and_the_extractor_are_made_once(model_file, counted):
    classifier = open_model(model_file(CLASSIFIER))
    analysis = classifier.analysis
    assert classifier.kind is ModelKind.CLASSIFIER and analysis.class_layer is not None and analysis.imprinting is None
    assert classifier.analysis is analysis and analysis.output_type == "uint8" and not analysis.appended_classes
    extractor = extractor_model(classifier)
    assert extractor is extractor_model(classifier) is classifier.extractor and extractor.kind is ModelKind.EXTRACTOR
    tree, point = extractor_tree(classifier)
    assert point == analysis.class_layer and tree is not extractor.tree  # a copy, free to edit
    assert output_type_of(classifier) == "uint8"
    assert counted == {"_inspect": 1 + 1, "_class_layer_behind": 1 + 1, "extract_segment": 1}  # + the extractor's own analysis
    plain = open_model(model_file(EXTRACTOR))
    assert extractor_model(plain) is plain and plain.analysis.embedding.dim == 1024
    with pytest.raises(dataclasses.FrozenInstanceError):
        analysis.kind = ModelKind.OTHER


def test_a_train_job_on_a_classifier_cuts_it_once(model_file, parts, counted):
    train(parts / "parts", parts / "out", model_file(CLASSIFIER), TrainOptions(progress=False), log=lambda line: None)
    assert counted["extract_segment"] == 1 and counted["_class_layer_behind"] <= 2


def test_an_imprint_job_finds_the_imprinting_structure_once(model_file, parts, counted):
    imprint(parts / "parts", parts / "first", model_file(CLASSIFIER), ImprintOptions(progress=False), log=lambda line: None)
    assert counted["extract_segment"] == 1
    counted.clear()
    imprint(parts / "more", parts / "second", options=ImprintOptions(progress=False, unknown=False),
            resume=parts / "first" / "model.tflite", log=lambda line: None)
    assert counted["_inspect"] == 1 and counted["extract_segment"] == 1  # the resumed model's, and its extractor's cut
    counted.clear()
    imprint(parts / "more", parts / "third", options=ImprintOptions(progress=False), resume=parts / "first" / "model.tflite",
            log=lambda line: None)
    # with the unknown rule: the written model is inspected for the tensor its rule reads, and the resumed one is cut
    # a second time, at that tensor (its extractor ends after the L2Norm, the rule reads what goes in)
    assert counted["_inspect"] == 2 and counted["extract_segment"] == 2
