"""The unknown answer of a model file: read its rule once, run the model so the rule can be applied, decide per image.

Every path that classifies with a model file goes through here (``classify``, ``evaluate``, and the
Python API), so the rule is honoured the same way everywhere. It lives with the jobs because the
rule's class (:class:`~lastlayer.learn.unknown.UnknownRule`) is learning code, which comes after the
runtime in the data flow; a predictor of the runtime that should honour the rule is handed the check::

    check = unknown_check(model_file)                     # None: no rule stored (or turned off)
    interpreter = Interpreter(model_file, extra_outputs=check.extra_outputs if check else ())
    decision = check.decide(interpreter.run_file("photo.jpg"))   # scores, unknown, similarity

``unknown_check(model, enabled=False)`` turns the rule off and ``threshold=`` overrides the stored
threshold. Without a check the interpreter runs the file's graph unchanged and returns the scores.

The jobs that write a model (``imprint``, ``train``) derive the rule they store with
:func:`derive_rule` (continuing the rule of the model they extend, :func:`previous_rule`) and report
it through :class:`RuleOutcome`: a job never fails for want of a rule, it says why there is none.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from lastlayer.errors import ModelError
from lastlayer.learn.unknown import TooFewExamplesError, UnknownRule
from lastlayer.model.file import ModelFile
from lastlayer.model.unknown import read_unknown_rule
from lastlayer.report.intervals import Count, count

MODEL, OVERRIDE = "model", "override"


@dataclass(frozen=True)
class Decision:
    """One or more images: the model's scores, whether each is unknown, and the similarity the rule compared."""

    scores: np.ndarray  # [n, C]
    unknown: np.ndarray  # [n] bool
    similarity: np.ndarray  # [n] similarity to the closest class centre


@dataclass(frozen=True)
class UnknownCheck:
    """A model's rule, ready to apply to what an interpreter with :attr:`extra_outputs` returns.

    Attributes:
        rule: the rule (with the override threshold, if one was given).
        tensor: the model tensor the rule reads (index in subgraph 0) and ``tensor_name`` its name.
        classes: values in the model's output 0; the tensor's ``rule.dim`` values follow them.
        source: ``"model"`` (the stored threshold) or ``"override"``.
    """

    rule: UnknownRule
    tensor: int
    tensor_name: str
    classes: int
    source: str = MODEL

    @property
    def extra_outputs(self) -> tuple[int, ...]:
        """What to pass as ``Interpreter(..., extra_outputs=...)``."""
        return (self.tensor,)

    @property
    def threshold(self) -> float:
        return self.rule.threshold

    def split(self, joined: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(scores [n, C], embeddings [n, D])`` from joined outputs ``[n, C + D]`` (or one ``[C + D]`` vector)."""
        rows = np.atleast_2d(np.asarray(joined, dtype=np.float32))
        if rows.shape[1] != self.classes + self.rule.dim:
            raise ValueError(f"expected {self.classes} scores and {self.rule.dim} embedding values, got {rows.shape[1]} values")
        return rows[:, :self.classes], rows[:, self.classes:]

    def decide(self, joined: np.ndarray) -> Decision:
        """Scores, unknown flags and similarities of joined outputs (rows with NaN, e.g. unreadable images, stay unknown)."""
        scores, embeddings = self.split(joined)
        readable = np.isfinite(embeddings).all(axis=1)
        similarity = np.full(len(scores), np.nan)
        accepted = np.zeros(len(scores), dtype=bool)
        if readable.any():
            similarity[readable] = self.rule.similarity(embeddings[readable])
            accepted[readable] = self.rule.accepts(embeddings[readable], predicted=np.argmax(scores[readable], axis=1))
        return Decision(scores, ~accepted, similarity)

    def to_dict(self) -> dict[str, Any]:
        """What reports say about the rule applied."""
        return {"threshold": round(self.rule.threshold, 6), "source": self.source,
                "derived_threshold": None if self.rule.derived_threshold is None else round(self.rule.derived_threshold, 6),
                "tensor": self.tensor_name}


def unknown_check(model: ModelFile, *, enabled: bool = True, threshold: float | None = None) -> UnknownCheck | None:
    """The rule ``model`` stores, ready to apply; ``None`` when it stores none or ``enabled`` is False.

    ``threshold`` overrides the stored threshold; giving one for a model without a rule is a
    :class:`ModelError` (the override would silently do nothing).
    """
    if not enabled:
        return None
    stored = read_unknown_rule(model)
    if stored is None:
        if threshold is not None:
            raise ModelError(f"{model.name} carries no unknown rule, so an unknown threshold cannot apply; "
                             "use a model written with one, or leave the threshold out", subject="unknown_threshold")
        return None
    try:
        rule = UnknownRule.from_dict(stored.rule)
    except ValueError as exc:
        raise ModelError(f"{model.name}: {exc}; write the model again, or turn the unknown answer off", subject="model") from None
    graph = model.tree.subgraphs[0]
    classes = int(np.prod(graph.tensors[graph.outputs[0]].shape))
    if rule.num_classes != classes or rule.dim != stored.size:
        raise ModelError(f"{model.name}: its unknown rule is for {rule.num_classes} classes of {rule.dim} features, but the model "
                         f"has {classes} classes and tensor {stored.name!r} {stored.size} values; write the model again, "
                         "or turn the unknown answer off", subject="model")
    if threshold is not None:
        return UnknownCheck(rule.with_threshold(threshold), stored.tensor, stored.name, classes, OVERRIDE)
    return UnknownCheck(rule, stored.tensor, stored.name, classes, MODEL)


@dataclass(frozen=True)
class RuleOutcome:
    """The unknown rule a learning job stores in its model, or why it stores none, and how it did on held-out photos.

    Attributes:
        rule: the rule stored (``None``: none).
        note: why there is no rule (too few examples, turned off), else ``None``.
        continued_from: the model whose stored rule this one continues (``None``: derived afresh).
        held_out: held-out photos of the taught classes that the rule answered unknown (``None``: none tested).
    """

    rule: UnknownRule | None
    note: str | None = None
    continued_from: str | None = None
    held_out: Count | None = None

    def tested(self, X: np.ndarray, predicted: np.ndarray) -> RuleOutcome:
        """This outcome with :attr:`held_out` counted on held-out embeddings ``X`` the head predicted as ``predicted``."""
        if self.rule is None or not len(X):
            return self
        answered = ~self.rule.accepts(X, predicted=np.asarray(predicted, dtype=np.int64))
        return replace(self, held_out=count(int(answered.sum()), len(X)))

    def headline(self) -> str:
        """The clause a job's headline ends with, e.g. ``; unknown below similarity 0.612: 2 / 36 held-out photos answered
        unknown, 95 % interval 0.01-0.19``."""
        if self.rule is None:
            return f"; no unknown rule: {self.note}"
        text = f"; unknown below similarity {self.rule.threshold:.3f}"
        return text + (f": {self.held_out.describe('held-out photos answered unknown')}" if self.held_out else "")

    def to_dict(self) -> dict[str, Any]:
        """The report's ``unknown_rule`` section."""
        rule = self.rule
        return {"stored": rule is not None, "note": self.note, "continued_from": self.continued_from,
                "threshold": None if rule is None else round(rule.threshold, 6),
                "examples": None if rule is None else int(sum(rule.examples)),
                "classes_judged": None if rule is None else int(sum(n > 0 for n in rule.examples)),
                "held_out_answered_unknown": None if self.held_out is None else self.held_out.to_dict(),
                "text": self.headline().lstrip("; ")}


OFF = "turned off (--no-unknown)"


def previous_rule(model: ModelFile, num_classes: int, dim: int) -> tuple[UnknownRule | None, str | None]:
    """The rule ``model`` stores when it fits ``num_classes`` classes of ``dim`` features (a job continues it), else
    ``(None, why)``; ``(None, None)`` when it stores none."""
    try:
        stored = read_unknown_rule(model)
        rule = None if stored is None else UnknownRule.from_dict(stored.rule)
    except (ModelError, ValueError) as exc:
        return None, f"the rule stored in {model.name} was not continued ({exc})"
    if rule is None:
        return None, None
    if (rule.num_classes, rule.dim) != (num_classes, dim):
        return None, (f"the rule stored in {model.name} is for {rule.num_classes} classes of {rule.dim} features, not "
                      f"{num_classes} of {dim}; not continued")
    return rule, None


def derive_rule(X: np.ndarray, ids: np.ndarray, num_classes: int, *, previous: UnknownRule | None = None,
                source: str | None = None, enabled: bool = True) -> RuleOutcome:
    """The rule for a head of ``num_classes`` classes from embeddings ``X`` of classes ``ids`` (this run's examples).

    ``previous`` (the rule of the model ``source`` the head extends, for its first classes) is continued
    with :meth:`UnknownRule.partial_fit`; classes without examples are not judged. Too few examples
    give no rule and a note saying so, never an error; ``enabled=False`` gives none (:data:`OFF`).
    """
    if not enabled:
        return RuleOutcome(None, OFF)
    try:
        if previous is not None:
            return RuleOutcome(previous.partial_fit(X, ids, num_classes=num_classes), continued_from=source)
        return RuleOutcome(UnknownRule.fit(X, ids, num_classes=num_classes))
    except TooFewExamplesError as exc:
        return RuleOutcome(None, str(exc))
