"""``lastlayer classify``: the top classes of each image, every readable image reported, unreadable ones listed.

A model that stores an unknown rule (see :mod:`lastlayer.unknown`) also says, per image, whether it
is of none of its classes: ``"unknown": true`` in JSON, ``unknown (closest: roses 0.64)`` in text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from lastlayer.classify import get_classes_from_scores, label_of
from lastlayer.errors import ImageError
from lastlayer.jobs.base import PathLike
from lastlayer.model.labels import read_label_file
from lastlayer.model.normalization import Values
from lastlayer.model.zoo import open_model, resolve_labels
from lastlayer.runtime import Interpreter
from lastlayer.unknown import unknown_check


@dataclass
class ImageScores:
    """Ranked classes per image, and the images that could not be read (with the reason).

    Each result holds ``image``, ``classes`` (ranked), ``unknown`` (True / False, or None when the
    model has no unknown rule or it was turned off), ``similarity`` (to the closest class, what the
    rule compared; None without a rule) and ``closest`` (the top class, also when it is hidden by the
    threshold). ``unknown_rule`` describes the rule applied (None: none).
    """

    model: str
    results: list[dict[str, Any]] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    threshold: float = 0.0
    unknown_rule: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "unknown_rule": self.unknown_rule, "results": self.results, "unreadable": self.unreadable}

    def to_text(self) -> str:
        lines = []
        for result in self.results:
            lines.append(result["image"])
            if result.get("unknown"):
                closest = result["closest"]
                lines.append(f"  unknown (closest: {closest['label']} {closest['score']:.2f})")
                continue
            if not result["classes"]:
                lines.append(f"  (no class scored >= {self.threshold})")
            for c in result["classes"]:
                name = f"  {c['label']}" if c["label"] != str(c["id"]) else ""
                lines.append(f"  {c['score']:.5f}  {c['id']:>4}{name}")
        return "\n".join(lines)


def classify_files(model: PathLike, images: Sequence[PathLike], *, labels: PathLike | None = None, top_k: int = 5,
                   threshold: float = 0.0, num_threads: int | None = None, input_mean: Values | str | None = None,
                   input_std: Values | str | None = None, unknown: bool = True,
                   unknown_threshold: float | None = None) -> ImageScores:
    """Classify each image; an unreadable image is listed in ``unreadable`` and the others still classified.

    ``input_mean`` / ``input_std`` override the normalisation decided from the model (one value or one per channel).
    ``unknown=False`` ignores the model's unknown rule; ``unknown_threshold`` overrides its threshold.
    """
    model_file = open_model(model)
    check = unknown_check(model_file, enabled=unknown, threshold=unknown_threshold)
    interpreter = Interpreter(model_file, num_threads=num_threads, input_mean=input_mean, input_std=input_std,
                              extra_outputs=check.extra_outputs if check else ())
    table = read_label_file(resolve_labels(labels)) if labels else model_file.labels
    result = ImageScores(model_file.name, threshold=threshold, unknown_rule=check.to_dict() if check else None)
    for image in images:
        try:
            output = interpreter.run_file(image)
        except ImageError as exc:
            result.unreadable.append({"image": str(image), "error": str(exc)})
            continue
        decision = check.decide(output) if check else None
        scores = decision.scores[0] if decision else output
        # A score of exactly 0 carries no information; never list those.
        ranked = [c for c in get_classes_from_scores(scores, top_k, threshold) if c.score > 0]
        top = get_classes_from_scores(scores, 1)[0]
        result.results.append({
            "image": str(image),
            "classes": [{"id": c.id, "label": label_of(table, c.id), "score": round(c.score, 6)} for c in ranked],
            "unknown": bool(decision.unknown[0]) if decision else None,
            "similarity": round(float(decision.similarity[0]), 6) if decision else None,
            "closest": {"id": top.id, "label": label_of(table, top.id), "score": round(top.score, 6)}})
    return result
