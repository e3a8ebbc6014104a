"""A fine-tune with nothing to learn says so, instead of ``loss 0.000 -> 0.000``."""

from __future__ import annotations

import numpy as np
import pytest

from lastlayer.learn.descent import NOTHING_TO_LEARN
from lastlayer.learn.imprinting import ImprintingHead


def _head(spread: float, overlap: float) -> ImprintingHead:
    rng = np.random.default_rng(0)
    centres = overlap + np.eye(3, 4)  # with overlap > 0 the centres share a direction
    X = np.concatenate([centre + spread * rng.normal(size=(8, 4)) for centre in centres])
    return ImprintingHead().fit(X, np.repeat(np.arange(3), 8))


def test_well_separated_examples_leave_nothing_to_learn():
    result = _head(0.01, 0.0).finetune(50)
    assert result.loss_before < NOTHING_TO_LEARN and result.nothing_to_learn
    summary = result.summary()
    assert summary.startswith("nothing to learn: the imprinted rows already fit the examples (training loss ")
    assert "0.000 -> 0.000" not in summary


def test_overlapping_examples_report_the_losses():
    result = _head(0.5, 1.0).finetune(50)
    assert not result.nothing_to_learn and result.loss_before >= NOTHING_TO_LEARN
    assert result.summary().startswith(f"loss {result.loss_before:.3f} -> {result.loss_after:.3f} (training loss, ")


@pytest.mark.shared
def test_imprint_and_the_session_say_so(tmp_path, model_file):
    from lastlayer.images.render import render_frame, write_image_folder
    from lastlayer.jobs.imprint import ImprintOptions, imprint
    from lastlayer.teach.session import TeachingSession

    from conftest import EXTRACTOR

    for kind in ("gear", "red"):
        write_image_folder(tmp_path / "data" / kind, [(kind, 6)], size=(96, 72))
    lines: list[str] = []
    result = imprint(tmp_path / "data", tmp_path / "out", model_file(EXTRACTOR), ImprintOptions(finetune=True, progress=False),
                     log=lines.append)
    assert result.report["finetune"]["nothing_to_learn"] is True
    assert any(line.startswith("fine-tuned: nothing to learn") for line in lines)
    with TeachingSession(tmp_path / "state", model_file(EXTRACTOR)) as session:
        for kind in ("gear", "red"):
            session.add_examples(kind, [render_frame(kind, i, size=(96, 72)) for i in range(4)])
        tuned = session.finetune(20)
    assert tuned["nothing_to_learn"] is True and tuned["summary"].startswith("nothing to learn")
