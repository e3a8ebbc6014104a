"""Label files; mirrors ``pycoral.utils.dataset``.

Same formats and results as PyCoral: ``0:cat``, ``0 cat``, ``0: cat`` or a bare ``cat`` (keyed by its
line number, blank lines counted); for a repeated id the last line wins. A missing file raises
``FileNotFoundError`` as in PyCoral. One fix: a UTF-8 byte-order mark is not part of the first label.
"""

from __future__ import annotations

import os
import re
from typing import Union

_SEPARATOR = re.compile(r"[:\s]+")


def read_label_file(file_path: Union[str, os.PathLike[str]]) -> dict[int, str]:
    """Read a label file into ``{class_id: label}``."""
    with open(file_path, encoding="utf-8-sig") as handle:
        lines = handle.readlines()
    labels: dict[int, str] = {}
    for row, line in enumerate(lines):
        text = line.strip()
        pair = _SEPARATOR.split(text, maxsplit=1)
        if len(pair) == 2 and pair[0].strip().isdigit():
            labels[int(pair[0])] = pair[1].strip()
        else:
            labels[row] = text
    return labels
