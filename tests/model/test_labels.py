from __future__ import annotations

import pytest

from lastlayer.errors import LabelFileError
from lastlayer.model import load_model, model_to_bytes
from lastlayer.model.labels import embedded_labels, parse_labels, read_label_file, set_embedded_labels

from conftest import CLASSIFIER_V2, EXTRACTOR


def test_pycoral_label_formats():
    text = "0 background\n1:  tabby cat\n2  dog\nowl\n\n5: x\n"
    assert parse_labels(text) == {0: "background", 1: "tabby cat", 2: "dog", 3: "owl", 4: "", 5: "x"}
    assert parse_labels("cat\ndog\n") == {0: "cat", 1: "dog"}
    assert parse_labels("0 a\n0 b\n") == {0: "b"}
    assert parse_labels("-1 neg\n") == {0: "-1 neg"}


def test_read_label_file(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("0: cat\n1: dog\n", encoding="utf-8")
    assert read_label_file(path) == {0: "cat", 1: "dog"}
    with pytest.raises(LabelFileError, match="missing.txt does not exist"):
        read_label_file(tmp_path / "missing.txt")


def test_labels_in_appended_zip_of_coral_models(model_file):
    data = model_file(CLASSIFIER_V2).read_bytes()
    labels = embedded_labels(load_model(data), data)
    assert labels[0] == "background" and "cat" in labels[286]


def test_embedded_labels_survive_save_and_replace(model_file):
    model = load_model(model_file(EXTRACTOR))
    assert embedded_labels(model) is None
    set_embedded_labels(model, ["gear", "washer ø"])
    reloaded = load_model(model_to_bytes(model))
    assert embedded_labels(reloaded) == {0: "gear", 1: "washer ø"}
    set_embedded_labels(reloaded, {0: "a", 1: "b", 2: "c"})
    assert embedded_labels(load_model(model_to_bytes(reloaded))) == {0: "a", 1: "b", 2: "c"}
    assert sum(1 for m in reloaded.metadata if m.name in (b"labels", "labels")) == 1
