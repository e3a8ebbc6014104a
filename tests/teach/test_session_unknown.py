"""A teaching session's unknown answer: fitted on the stored embeddings, kept current cheaply (this process's changes
and other processes'), stored with the export; the override and the off switch; the honest leave-one-out wording."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lastlayer.images.render import render_frame
from lastlayer.jobs.unknown import unknown_check
from lastlayer.learn.unknown import UnknownRule
from lastlayer.model.file import ModelFile
from lastlayer.report.intervals import clopper_pearson
from lastlayer.teach.session import TeachingSession

from conftest import EXTRACTOR

pytestmark = pytest.mark.shared
TAUGHT = ("gear", "washer")


def _teach(session: TeachingSession, shots: int = 4) -> None:
    for kind in TAUGHT:
        session.add_examples(kind, [render_frame(kind, 100 + i) for i in range(shots)])


def _stored_units(session: TeachingSession) -> tuple[np.ndarray, np.ndarray]:
    """The stored embeddings, read from the state's database (what the rule must be fitted on), and their class order."""
    examples = session.store.snapshot(None, every_example=True).examples
    names = [c.name for c in session.classes()]
    X = np.stack([e.embedding for e in examples])
    ids = [c.id for c in session.classes()]
    return X, np.array([ids.index(e.class_id) for e in examples]), names


def _same_rule(actual: UnknownRule, expected: UnknownRule) -> None:
    assert actual.examples == expected.examples and actual.threshold == pytest.approx(expected.threshold, abs=1e-6)
    np.testing.assert_allclose(actual.means.astype(float), expected.means.astype(float), atol=1e-3)


@pytest.fixture
def session(model_file, tmp_path):
    with TeachingSession(tmp_path / "state", model_file(EXTRACTOR)) as opened:
        yield opened


def test_predictions_answer_unknown_for_what_was_never_taught(session):
    _teach(session)
    X, y, _ = _stored_units(session)
    rule = UnknownRule.fit(X, y)
    for kind, expected in (("gear", False), ("washer", False), ("nut", True), ("empty", True)):
        prediction = session.predict(render_frame(kind, 3))
        assert prediction.unknown is expected, kind
        assert prediction.similarity == pytest.approx(rule.similarity(prediction.embedding[np.newaxis])[0], abs=1e-6)
        assert prediction.describe().startswith("unknown (closest: " if expected else f"{kind} ")
    assert session.unknown_rule()["threshold"] == pytest.approx(rule.threshold, abs=1e-6)


def test_the_off_switch_and_the_override(model_file, tmp_path):
    with TeachingSession(tmp_path / "state", model_file(EXTRACTOR)) as taught:
        _teach(taught)
    nut = render_frame("nut", 3)
    with TeachingSession(tmp_path / "state", unknown=False) as off:
        assert off.predict(nut).unknown is None and off.predict(nut).similarity is None
        assert off.unknown_rule()["active"] is False and unknown_check(_exported(off, tmp_path / "off")) is None
    with TeachingSession(tmp_path / "state", unknown_threshold=-1.0) as low:
        assert low.predict(nut).unknown is False
        check = unknown_check(_exported(low, tmp_path / "low"))
        assert check.rule.threshold == -1.0 and check.rule.derived_threshold == pytest.approx(low.unknown_rule()["derived_threshold"])
    with TeachingSession(tmp_path / "state", unknown_threshold=0.9999) as high:
        assert high.predict(render_frame("gear", 3)).unknown is True


def _exported(session: TeachingSession, folder) -> ModelFile:
    model, _ = session.export(folder)
    return ModelFile.read(model)


def test_the_export_carries_the_rule_of_the_stored_examples(session, tmp_path):
    _teach(session)
    X, y, names = _stored_units(session)
    exported = _exported(session, tmp_path / "export")
    check = unknown_check(exported)
    _same_rule(check.rule, UnknownRule.fit(X, y))
    assert exported.label_list(2) == names
    from lastlayer.jobs.classify import classify_files

    (tmp_path / "nut.png").write_bytes(_png(render_frame("nut", 3)))
    (tmp_path / "gear.png").write_bytes(_png(render_frame("gear", 3)))
    answered = classify_files(exported.path, [tmp_path / "nut.png", tmp_path / "gear.png"]).results
    assert [r.unknown for r in answered] == [True, False]


def _png(pixels) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def test_too_few_examples_give_no_rule_and_say_so(session):
    session.add_examples("gear", render_frame("gear", 1))
    session.add_examples("washer", render_frame("washer", 1))
    assert session.predict(render_frame("nut", 1)).unknown is None
    assert "too few examples" in session.unknown_rule()["note"] and not session.unknown_rule()["active"]
    session.add_examples("gear", [render_frame("gear", i) for i in range(2, 5)])
    assert session.unknown_rule()["active"] and session.predict(render_frame("nut", 1)).unknown is True


def test_additions_grow_the_rule_removals_refit_it_and_it_settles_exact(session):
    keeper = session._replica.rule
    _teach(session)
    fits, grown = keeper.fits, keeper.partial_fits
    keeper.settle = 0.0  # (normally a second without additions)
    added = session.add_examples("gear", render_frame("gear", 120))
    assert keeper.partial_fits == grown + 1 and keeper.fits == fits and not keeper.exact  # folded in: no full fit
    X, y, _ = _stored_units(session)
    assert keeper.rule.examples == tuple(np.bincount(y))
    session.refresh()
    assert keeper.exact and keeper.fits == fits + 1
    _same_rule(keeper.rule, UnknownRule.fit(X, y))
    session.remove_example(added[0].id)
    X, y, _ = _stored_units(session)
    assert keeper.exact and keeper.fits == fits + 2
    _same_rule(keeper.rule, UnknownRule.fit(X, y))


def test_another_processs_examples_reach_the_rule(model_file, tmp_path):
    nut = render_frame("nut", 3)
    with TeachingSession(tmp_path / "state", model_file(EXTRACTOR)) as here, TeachingSession(tmp_path / "state") as there:
        _teach(here)
        there.refresh()
        assert there.predict(nut).unknown is True
        here.add_examples("nut", [render_frame("nut", 100 + i) for i in range(4)])
        there.refresh()
        assert there.predict(nut).unknown is False and there.predict(nut).top[0] == "nut"
        X, y, _ = _stored_units(there)
        _same_rule(there._replica.rule.rule, UnknownRule.fit(X, y))


def test_leave_one_out_says_on_how_many_and_with_its_interval(session):
    _teach(session, shots=5)
    session.add_examples("nut", [render_frame("nut", 100 + i) for i in range(5)])
    result = session.evaluate()
    right = sum(row[i] for i, row in enumerate(result.confusion))
    low, high = clopper_pearson(right, 15)
    text = f"leave-one-out {right} / 15 right, 95 % interval {math.floor(low * 100) / 100:.2f}-{math.ceil(high * 100) / 100:.2f}"
    assert result.summary() == text and result.to_dict()["summary"] == text
    assert result.to_dict()["right"]["of"] == 15 and set(result.to_dict()["per_class_summary"]) == {"gear", "washer", "nut"}
    assert result.to_dict()["per_class_summary"]["nut"].startswith(f"{result.confusion[2][2]} / 5 right, 95 % interval ")
