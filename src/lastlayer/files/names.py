"""Class names that are safe everywhere: one line of a label file, a CSV cell, a folder, a terminal line, a web page.

The one rule, used by the teaching session (web page and terminal), dataset folders and CSV lists, and
label files:

* a name is NFC-normalised (``"café"`` typed on a Mac and on Linux is one name) and stripped of
  surrounding white space; it holds 1 to :data:`MAX_LENGTH` characters;
* it may not hold a line or paragraph separator, a control character (``\\n``, ``\\t``, U+0085), an
  invisible format character (bidirectional overrides and isolates, zero-width spaces and joiners, the
  byte-order mark, soft hyphens), an invisible filler, a lone surrogate or an unassigned code point:
  such characters split a label file into two lines (relabelling another class) or make two different
  names look the same;
* two names are the same class when their :func:`name_key` is equal: compared after compatibility
  normalisation (NFKC), case folding and collapsing runs of white space, so ``"gear"``, ``"Gear"``,
  ``"ＧＥＡＲ"`` and ``"gear "`` cannot be two classes.

:func:`name_problem` says what is wrong with a name (or ``None``); :func:`checked_name` returns the
normalised name or raises the caller's error kind with a one-line message.
"""

from __future__ import annotations

import unicodedata

from lastlayer.errors import LastLayerError

MAX_LENGTH = 100
_REFUSED_CATEGORIES = {
    "Cc": "a control character",
    "Cf": "an invisible format character",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
    "Cs": "a lone surrogate",
    "Cn": "an unassigned code point",
}
# Letters and marks that draw nothing (Unicode's default-ignorable code points outside the categories above),
# except the variation selectors that choose how an emoji looks.
_INVISIBLE = frozenset({0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180B, 0x180C, 0x180D, 0x180F, 0x3164, 0xFFA0})
# Every character Python's str.splitlines() or a label reader may split a line at.
LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def _describe(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X}{f' {name}' if name else ''}"


def refused_character(text: str) -> tuple[str, str] | None:
    """``(char, what it is)`` of the first character a name may not hold, or ``None``."""
    for char in text:
        category = unicodedata.category(char)
        if category in _REFUSED_CATEGORIES:
            return char, _REFUSED_CATEGORIES[category]
        if ord(char) in _INVISIBLE:
            return char, "an invisible character"
    return None


def normalized_name(name: str) -> str:
    """``name`` in NFC, without surrounding white space (no check)."""
    return unicodedata.normalize("NFC", name).strip()


def name_problem(name: object) -> str | None:
    """What makes ``name`` unusable as a class name (a phrase such as ``"is blank"``), or ``None`` when it is fine."""
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not text"
    refused = refused_character(unicodedata.normalize("NFC", name))
    if refused is not None:
        char, what = refused
        harm = "would split its line of a label file in two" if char in LINE_BREAKS else "can make two names look alike"
        return f"holds {what} ({_describe(char)}), which {harm}; rename it with visible characters only"
    text = normalized_name(name)
    if not text:
        return "is blank; give the class a name"
    if len(text) > MAX_LENGTH:
        return f"is {len(text)} characters long; use at most {MAX_LENGTH}"
    return None


def checked_name(name: object, what: str = "class name", error: type[LastLayerError] = LastLayerError,
                 subject: str | None = "class") -> str:
    """The NFC-normalised, stripped ``name``, or ``error`` naming ``what`` and the problem (see :func:`name_problem`)."""
    problem = name_problem(name)
    if problem is not None:
        raise error(f"{what} {shown(name)} {problem}", subject=subject)
    return normalized_name(name)  # type: ignore[arg-type]


def name_key(name: str) -> str:
    """What two names are compared by: NFKC, case-folded, white space collapsed (equal keys: the same class)."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold()).casefold()
    return " ".join(folded.split())


def shown(name: object) -> str:
    """``name`` quoted for a one-line message: ``repr`` escapes line breaks, controls and format characters; the
    invisible letters are escaped too."""
    return "".join(f"\\u{ord(char):04x}" if ord(char) in _INVISIBLE else char for char in repr(name))
