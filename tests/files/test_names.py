"""The class-name rule: NFC, no line breaks / controls / invisible characters, look-alikes are one name; label files never split."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from lastlayer.errors import ConflictError, LabelFileError, LastLayerError
from lastlayer.files.names import MAX_LENGTH, checked_name, name_key, name_problem, shown
from lastlayer.model.labels import format_labels, parse_labels
from lastlayer.teach.store import StateStore

# Every kind of character the rule refuses, each of which the old check (below 32 and 127 only) let through but the first.
REFUSED = {
    "line feed": "gear\n0 washer",
    "line separator": "gear\u20280 washer",
    "paragraph separator": "gear\u20290 washer",
    "next line": "gear\x850 washer",
    "vertical tab": "gear\x0b0 washer",
    "right-to-left override": "\u202eraeg",
    "left-to-right isolate": "gear\u2066",
    "zero-width space": "ge\u200bar",
    "zero-width joiner": "ge\u200dar",
    "byte-order mark": "\ufeffgear",
    "soft hyphen": "ge\u00adar",
    "hangul filler": "gear\u3164",
    "lone surrogate": "gear\ud800",
    "unassigned": "gear\U000e0fff",
}


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_refused_characters_are_named_in_one_line(kind: str) -> None:
    name = REFUSED[kind]
    problem = name_problem(name)
    assert problem is not None and "rename it" in problem, kind
    with pytest.raises(LastLayerError) as caught:
        checked_name(name)
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and "U+" in message
    assert all(char not in message for char in "\u2028\u2029\x85\u202e\u200b\ufeff\u3164"), message  # shown escaped


def test_names_are_nfc_stripped_and_bounded() -> None:
    assert checked_name("  cafe\u0301 ") == "caf\u00e9"
    assert checked_name("ring\u00a0gear") == "ring\u00a0gear"  # a no-break space inside a name is visible white space
    assert checked_name("\u2764\ufe0f heart") == "\u2764\ufe0f heart"  # an emoji's variation selector is allowed
    assert name_problem("   ") == "is blank; give the class a name"
    assert name_problem("x" * MAX_LENGTH) is None and "at most 100" in name_problem("x" * (MAX_LENGTH + 1))
    assert "not text" in name_problem(5)
    assert shown("a\u3164b") == "'a\\u3164b'" and shown("a\u2028b") == "'a\\u2028b'"


def test_look_alikes_share_a_key() -> None:
    same = ["gear", "Gear", "GEAR", "\uff27\uff25\uff21\uff32", "gear ", "  gear", "ge\u0061r"]
    assert {name_key(name) for name in same} == {"gear"}
    assert name_key("ring  gear") == name_key("Ring Gear")
    assert name_key("Stra\u00dfe") == name_key("STRASSE")  # case folding, not lower()
    assert name_key("gear") != name_key("gears")


def test_label_files_can_never_be_split() -> None:
    with pytest.raises(LabelFileError, match=r"label 1 'gear\\u20280 washer' holds a line break \(U\+2028\)"):
        format_labels(["washer", "gear\u20280 washer"])
    for broken in ("a\nb", "a\rb", "a\x85b", "a\u2029b", "a\x0cb"):
        with pytest.raises(LabelFileError):
            format_labels({0: broken})
    assert format_labels(["washer", "caf\u00e9 \u202b"]) == "0 washer\n1 caf\u00e9 \u202b\n"  # not a line break: written
    # Read as PyCoral reads it (text mode: lines end at \n, \r\n or \r only): a separator inside a label is kept.
    assert parse_labels("0 washer\n1 gear\u20280 bolt\n") == {0: "washer", 1: "gear\u20280 bolt"}
    assert parse_labels("0 a\r\n1 b\r2 c\n") == {0: "a", 1: "b", 2: "c"}
    assert parse_labels("\u00b2 x\n" + "9" * 4400 + " y\n") == {0: "\u00b2 x", 1: "9" * 4400 + " y"}  # never a crash


def test_look_alike_names_conflict_across_processes_and_name_the_class(tmp_path) -> None:
    store = StateStore(tmp_path / "state")
    try:
        code = "import sys; from lastlayer.teach.store import StateStore; s = StateStore(sys.argv[1]); s.add_class('Gear'); s.close()"
        subprocess.run([sys.executable, "-c", code, str(tmp_path / "state")], check=True, timeout=60)
        with pytest.raises(ConflictError, match=r"a class named 'Gear' exists already \('gear' differs from it only in case"):
            store.add_class("gear")  # this process never saw 'Gear': the database refuses it
        washer = store.add_class("washer")
        with pytest.raises(ConflictError, match="'Gear' exists already"):
            store.rename_class(washer, "\uff47\uff45\uff41\uff52")
        store.rename_class(washer, "Washer")  # its own look-alike: a rename, not a conflict
        assert [c.name for c in store.snapshot().classes] == ["Gear", "Washer"]
    finally:
        store.close()


def test_a_state_of_the_old_schema_is_migrated_keeping_its_look_alikes(tmp_path) -> None:
    folder = tmp_path / "state"
    StateStore(folder).close()
    with sqlite3.connect(folder / "session.sqlite") as db:  # as lastlayer 0.3 left it: no keys, look-alikes allowed
        db.execute("DROP INDEX classes_by_key")
        db.execute("ALTER TABLE classes DROP COLUMN name_key")
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
        db.executemany("INSERT INTO classes(name) VALUES (?)", [("gear",), ("Gear",), ("bolt",)])
    store = StateStore(folder)
    try:
        assert store.get_meta("schema_version") == 2
        assert [c.name for c in store.snapshot().classes] == ["gear", "Gear", "bolt"]  # nothing renamed or lost
        with pytest.raises(ConflictError, match="'gear' exists already"):
            store.add_class("GEAR")
        with pytest.raises(ConflictError, match="'bolt' exists already"):
            store.add_class("Bolt")
        gear_two = store.snapshot().classes[1].id
        store.rename_class(gear_two, "spur gear")
        store.add_class("nut")
    finally:
        store.close()
    reopened = StateStore(folder)  # migrated once: opening again changes nothing
    revision = reopened.revision()
    reopened.close()
    again = StateStore(folder)
    try:
        assert again.revision() == revision
    finally:
        again.close()
