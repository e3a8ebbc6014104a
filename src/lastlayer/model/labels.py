"""Label files (the formats PyCoral reads) and labels embedded in a model.

Embedded labels live in a model metadata entry named ``labels`` whose buffer holds the label file
text. Models from TensorFlow's metadata writer instead append a zip with a ``*labels*.txt`` file;
both are read.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from typing import Mapping, Sequence, Union

from ai_edge_litert import schema_py_generated as schema

from lastlayer.errors import LabelFileError
from lastlayer.files.names import LINE_BREAKS, shown
from lastlayer.files.outputs import atomic_write_text
from lastlayer.model.metadata import read_metadata, write_metadata

LABELS_METADATA_NAME = "labels"
_SPLIT = re.compile(r"[:\s]+")


def parse_labels(text: str) -> dict[int, str]:
    """Parse label text as PyCoral's ``read_label_file`` does.

    Each line is ``id label``, ``id: label`` or just ``label`` (then the id is the line number,
    blank lines counted). Formats may be mixed; for a repeated id the last line wins. Lines end at
    ``\\n``, ``\\r\\n`` or ``\\r`` only, as in PyCoral (a file read in text mode): a Unicode line
    separator inside a label does not start another line.
    """
    labels: dict[int, str] = {}
    for row, line in enumerate(io.StringIO(text, newline=None)):
        stripped = line.strip()
        parts = _SPLIT.split(stripped, maxsplit=1)
        if len(parts) == 2 and parts[0].isdecimal() and len(parts[0]) <= 18:  # (PyCoral's isdigit() lets "²" crash int())
            labels[int(parts[0])] = parts[1].strip()
        else:
            labels[row] = stripped
    return labels


def read_label_file(path: Union[str, os.PathLike[str]]) -> dict[int, str]:
    """Read a label file into ``{class_id: name}`` (PyCoral-compatible name and semantics)."""
    try:
        with open(path, encoding="utf-8-sig") as handle:  # -sig: a leading byte-order mark is not part of the first label
            text = handle.read()
    except FileNotFoundError:
        raise LabelFileError(f"label file {path} does not exist; check its path", subject="labels") from None
    except IsADirectoryError:
        raise LabelFileError(f"label path {path} is a folder; give the label file inside it", subject="labels") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = f"not UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})" if isinstance(exc, UnicodeDecodeError) \
            else (exc.strerror or str(exc))
        raise LabelFileError(f"cannot read label file {path}: {reason}; it must be UTF-8 text, one label per line",
                             subject="labels") from None
    if "\x00" in text:
        raise LabelFileError(f"label file {path} is binary (it holds NUL bytes), not text; give a UTF-8 text file, one label per line",
                             subject="labels")
    return parse_labels(text)


def format_labels(labels: Sequence[str] | Mapping[int, str]) -> str:
    """Label file text, one ``id name`` line per class in id order.

    A label holding a line break of any kind (``\\n``, U+2028, U+0085...) is refused with
    :class:`LabelFileError`: it would end its line early, and the rest would relabel another class in
    any reader that splits lines there.
    """
    items = sorted(labels.items()) if isinstance(labels, Mapping) else list(enumerate(labels))
    for class_id, name in items:
        broken = next((char for char in str(name) if char in LINE_BREAKS), None)
        if broken is not None:
            raise LabelFileError(f"label {class_id} {shown(name)} holds a line break (U+{ord(broken):04X}), which would split the "
                                 "label file; rename the class", subject="labels")
    return "".join(f"{class_id} {name}\n" for class_id, name in items)


def write_label_file(path: Union[str, os.PathLike[str]], labels: Sequence[str] | Mapping[int, str]) -> None:
    """Write a label file (``id name`` per line) atomically."""
    atomic_write_text(path, format_labels(labels))


def set_embedded_labels(model: schema.ModelT, labels: Sequence[str] | Mapping[int, str]) -> None:
    """Store labels in ``model`` as the ``labels`` metadata entry (replacing an existing one)."""
    write_metadata(model, LABELS_METADATA_NAME, format_labels(labels).encode("utf-8"))


def embedded_labels(model: schema.ModelT, model_bytes: bytes | None = None) -> dict[int, str] | None:
    """Labels stored in the model, or ``None``.

    Looks for the ``labels`` metadata entry first, then (given the file's bytes) for a label file
    in a zip appended to the flatbuffer, as TFLite's metadata writer produces.
    """
    stored = read_metadata(model, LABELS_METADATA_NAME)
    if stored is not None:
        return parse_labels(stored.decode("utf-8-sig", "replace"))
    if model_bytes is not None:
        return _labels_from_appended_zip(model_bytes)
    return None


class EmbeddedLabelsError(Exception):
    """A model carries labels that cannot be read (the reason, without the model's name)."""


_ZIP_LOCAL_HEADER = b"PK\x03\x04"


def _labels_from_appended_zip(model_bytes: bytes) -> dict[int, str] | None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(model_bytes))
        names = [n for n in archive.namelist() if n.lower().endswith(".txt") and "label" in n.lower()]
        if not names:
            return None
        return parse_labels(archive.read(names[0]).decode("utf-8-sig", "replace"))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError, ValueError, NotImplementedError) as exc:
        if _ZIP_LOCAL_HEADER in model_bytes[-(1 << 20):] or isinstance(exc, (EOFError, RuntimeError, NotImplementedError)):
            raise EmbeddedLabelsError(f"its appended label archive is damaged ({type(exc).__name__})") from None
        return None
