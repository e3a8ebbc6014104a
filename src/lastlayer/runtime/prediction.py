"""One prediction vocabulary: scores ranked by :func:`rank`, the same way everywhere, into a :class:`Prediction`.

Every path that turns a model's scores into ranked classes goes through :func:`rank` (best first,
ties by the lower class id, an inclusive threshold): ``lastlayer classify``, the live loop and its
smoothing, a teaching session, and PyCoral's ``get_classes`` (:mod:`lastlayer.pycoral.adapters.classify`,
which keeps PyCoral's own ``Class`` tuples and ``top_k=0`` rule on top of it).

A prediction made under an unknown rule also says whether the picture is of none of the classes
(:attr:`Prediction.unknown`); its :attr:`~Prediction.answer` is then ``"unknown"``, while
:attr:`~Prediction.top` stays the closest class.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

UNKNOWN = "unknown"  # the answer for a picture of none of the classes


def rank(scores: Any, top_k: float | None = None, threshold: float | None = None) -> np.ndarray:
    """Indices of the ``top_k`` best ``scores`` that are at least ``threshold``, best first (ties: lower index first).

    ``top_k`` None (or infinite) keeps every class; 0 keeps none. NaN scores rank last and never pass a threshold.
    """
    values = np.asarray(scores).reshape(-1).astype(np.float64)
    order = np.lexsort((np.arange(len(values)), -values))
    if top_k is not None and top_k != math.inf:
        order = order[: max(0, int(top_k))]
    if threshold is not None:
        order = order[values[order] >= threshold]
    return order


def label_of(labels: Mapping[int, str] | None, class_id: int) -> str:
    """The class name, or the id as text when there is no label for it."""
    if labels and class_id in labels:
        return labels[class_id]
    return str(class_id)


class ClassScore(NamedTuple):
    """One ranked class: its id, its label and its score."""

    id: int
    label: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "score": round(self.score, 6)}


@dataclass(frozen=True)
class Prediction:
    """The ranked classes for one image or frame (empty when nothing was taught yet).

    Attributes:
        classes: ``(label, score)`` pairs, best first; ``class_ids`` the classes' ids in the same order.
        revision: the teaching state's revision the prediction was made at (None when not from a state).
        embedding: the frame's unit embedding, so that teaching that frame needs no second embedding.
        image: the file it was made for (None for frames).
        unknown: the model's unknown rule says the picture is of none of its classes (None: no rule applied).
        similarity: what the unknown rule compared with its threshold (None without a rule).
        closest: the best class before any threshold (None: the first of ``classes``).
    """

    classes: list[tuple[str, float]]
    class_ids: list[int]
    revision: int | None = None
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)
    image: str | None = None
    unknown: bool | None = None
    similarity: float | None = None
    closest: ClassScore | None = None

    @classmethod
    def from_scores(cls, scores: Any, labels: Sequence[str] | Mapping[int, str] | None = None, *,
                    ids: Sequence[int] | None = None, top_k: float | None = None, threshold: float | None = None,
                    **details: Any) -> Prediction:
        """The :func:`rank` of ``scores`` as a prediction.

        ``labels``: a name per score (a sequence) or per class id (a mapping; missing ids are named by
        their number); ``ids``: the class id of each score (default: its index). ``details`` are the
        other fields (``revision``, ``embedding``, ``image``, ``unknown``, ``similarity``, ``closest``).
        """
        values = np.asarray(scores).reshape(-1)
        order = rank(values, top_k, threshold)
        class_ids = [int(ids[i]) if ids is not None else int(i) for i in order]
        if labels is None or isinstance(labels, Mapping):
            names = [label_of(labels, class_id) for class_id in class_ids]  # type: ignore[arg-type]
        else:
            names = [labels[i] for i in order]
        return cls([(name, float(values[i])) for name, i in zip(names, order)], class_ids, **details)

    @property
    def top(self) -> tuple[str, float] | None:
        """The best class and its score (also when the picture is unknown: see :attr:`answer`)."""
        return self.classes[0] if self.classes else None

    @property
    def answer(self) -> tuple[str, float] | None:
        """What to show or act on: ``("unknown", closest score)`` when the rule says unknown, else :attr:`top`."""
        top = self.top
        if top is not None and self.unknown:
            return UNKNOWN, top[1]
        return top

    def describe(self) -> str:
        """``roses 0.91``, ``unknown (closest: roses 0.64)``, or ``-`` before anything was taught."""
        top = self.top
        if top is None:
            return "-"
        if self.unknown:
            return f"{UNKNOWN} (closest: {top[0]} {top[1]:.2f})"
        return f"{top[0]} {top[1]:.2f}"

    @property
    def ranked(self) -> list[ClassScore]:
        """The classes as :class:`ClassScore` tuples, best first."""
        return [ClassScore(class_id, label, score) for class_id, (label, score) in zip(self.class_ids, self.classes)]

    def to_dict(self) -> dict[str, Any]:
        """The live loop's form: ``top`` (the :attr:`answer`: label ``"unknown"`` when the rule says so), ``closest``
        (the best class), ``unknown`` (None without a rule), ``similarity`` and ``top_k`` (``[{"class_id", "label",
        "score"}, ...]``)."""
        answer, top = self.answer, self.top
        return {"top": None if answer is None else {"label": answer[0], "score": round(float(answer[1]), 6)},
                "closest": None if top is None else {"label": top[0], "score": round(float(top[1]), 6)},
                "unknown": self.unknown, "similarity": None if self.similarity is None else round(float(self.similarity), 6),
                "top_k": [{"class_id": i, "label": label, "score": round(float(score), 6)}
                          for i, (label, score) in zip(self.class_ids, self.classes)]}
