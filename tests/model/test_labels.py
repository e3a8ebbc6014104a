from __future__ import annotations

import pytest

from lastlayer.errors import LabelFileError
from lastlayer.model.io import load_model, model_to_bytes
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


def test_label_files_with_a_bom_binary_or_latin1(tmp_path):
    (tmp_path / "bom.txt").write_bytes("\ufeff0 chat\n1 hibou\n".encode())
    assert read_label_file(tmp_path / "bom.txt") == {0: "chat", 1: "hibou"}
    (tmp_path / "bin.txt").write_bytes(b"0 a\x00\x00\x01\n")
    with pytest.raises(LabelFileError, match="bin.txt is binary"):
        read_label_file(tmp_path / "bin.txt")
    (tmp_path / "latin.txt").write_bytes("0 caf\xe9\n".encode("latin-1"))
    with pytest.raises(LabelFileError, match=r"latin.txt: not UTF-8 \(byte 0xe9"):
        read_label_file(tmp_path / "latin.txt")
    with pytest.raises(LabelFileError, match="is a folder"):
        read_label_file(tmp_path)


def _with_label_zip(model: bytes, text: str) -> bytes:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("labels.txt", text)
    return model + buffer.getvalue()


def test_embedded_zip_labels_with_a_bom(model_file):
    data = _with_label_zip(model_file(EXTRACTOR).read_bytes(), "\ufeffgear\nwasher\n")
    assert embedded_labels(load_model(data), data) == {0: "gear", 1: "washer"}


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_unreadable_embedded_labels_are_a_warning_naming_the_model(model_file, tmp_path, damage):
    from lastlayer.model.file import LabelsWarning
    from lastlayer.model.zoo import open_model

    model = model_file(EXTRACTOR).read_bytes()
    data = _with_label_zip(model, "gear\nwasher\n" * 50)
    if damage == "truncated":
        data = data[:len(model) + (len(data) - len(model)) // 2]
    else:
        start = data.index(b"gear", len(model))
        data = data[:start] + b"XXXX" + data[start + 4:]  # the stored CRC no longer matches
    path = tmp_path / "labelled.tflite"
    path.write_bytes(data)
    with pytest.warns(LabelsWarning, match=r"labelled.tflite: its appended label archive is damaged"):
        assert open_model(path).labels is None
