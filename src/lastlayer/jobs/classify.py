"""``lastlayer classify``: the top classes of each image, every readable image reported, unreadable ones listed.

A model that stores an unknown rule (see :mod:`lastlayer.jobs.unknown`) also says, per image, whether it
is of none of its classes: ``"unknown": true`` in JSON, ``unknown (closest: roses 0.64)`` in text.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lastlayer.errors import DatasetError, ImageError
from lastlayer.files.datasets import image_files_under
from lastlayer.jobs.base import PathLike
from lastlayer.jobs.unknown import unknown_check
from lastlayer.model.labels import read_label_file
from lastlayer.model.normalization import Values
from lastlayer.model.zoo import open_model, resolve_labels
from lastlayer.runtime import Interpreter
from lastlayer.runtime.prediction import ClassScore, Prediction


@dataclass
class ImageScores:
    """Ranked classes per image, and the images that could not be read (with the reason).

    Each result is a :class:`~lastlayer.runtime.prediction.Prediction` with ``image``, ``classes``
    (ranked, at least ``threshold`` and above 0), ``unknown`` (True / False, or None when the model
    has no unknown rule or it was turned off), ``similarity`` (to the closest class, what the rule
    compared; None without a rule) and ``closest`` (the top class, also when it is hidden by the
    threshold). ``unknown_rule`` describes the rule applied (None: none).
    """

    model: str
    results: list[Prediction] = field(default_factory=list)
    unreadable: list[dict[str, str]] = field(default_factory=list)
    threshold: float = 0.0
    unknown_rule: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "unknown_rule": self.unknown_rule, "results": [_result(r) for r in self.results],
                "unreadable": self.unreadable}

    def to_text(self) -> str:
        lines = []
        for result in self.results:
            lines.append(str(result.image))
            if result.unknown:
                closest = result.closest
                lines.append(f"  unknown (closest: {closest.label} {round(closest.score, 6):.2f})")
                continue
            if not result.classes:
                lines.append(f"  (no class scored >= {self.threshold})")
            for c in result.ranked:
                name = f"  {c.label}" if c.label != str(c.id) else ""
                lines.append(f"  {round(c.score, 6):.5f}  {c.id:>4}{name}")
        return "\n".join(lines)


def image_paths(specs: Sequence[PathLike]) -> list[Path]:
    """The images named: a file as given, a folder as the image files under it (at any depth, sorted, hidden ones left out).

    A folder without images is a :class:`~lastlayer.errors.DatasetError` (nothing is classified).
    """
    paths: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = image_files_under(path)
            if not found:
                raise DatasetError(f"folder {path} holds no images (.jpg, .png, ...); give image files or a folder of them",
                                   subject="images")
            paths.extend(found)
        else:
            paths.append(path)
    return paths


def classify_files(model: PathLike, images: Sequence[PathLike], *, labels: PathLike | None = None, top_k: int = 5,
                   threshold: float = 0.0, num_threads: int | None = None, input_mean: Values | str | None = None,
                   input_std: Values | str | None = None, unknown: bool = True,
                   unknown_threshold: float | None = None) -> ImageScores:
    """Classify each image (a folder: each image under it, see :func:`image_paths`); an unreadable image is listed in
    ``unreadable`` and the others still classified.

    ``input_mean`` / ``input_std`` override the normalisation decided from the model (one value or one per channel).
    ``unknown=False`` ignores the model's unknown rule; ``unknown_threshold`` overrides its threshold.
    """
    model_file = open_model(model)
    check = unknown_check(model_file, enabled=unknown, threshold=unknown_threshold)
    interpreter = Interpreter(model_file, num_threads=num_threads, input_mean=input_mean, input_std=input_std,
                              extra_outputs=check.extra_outputs if check else ())
    table = read_label_file(resolve_labels(labels)) if labels else model_file.labels
    result = ImageScores(model_file.name, threshold=threshold, unknown_rule=check.to_dict() if check else None)
    for image in image_paths(images):
        try:
            output = interpreter.run_file(image)
        except ImageError as exc:
            result.unreadable.append({"image": str(image), "error": str(exc)})
            continue
        decision = check.decide(output) if check else None
        scores = np.asarray(decision.scores[0] if decision else output).reshape(-1)
        # A score of 0 (or below) carries no information; never list those: NaN ranks last and passes no threshold.
        ranked = Prediction.from_scores(np.where(scores > 0, scores, np.nan), table, top_k=top_k, threshold=threshold)
        result.results.append(replace(
            ranked, image=str(image), unknown=bool(decision.unknown[0]) if decision else None,
            similarity=float(decision.similarity[0]) if decision else None,
            closest=Prediction.from_scores(scores, table, top_k=1).ranked[0]))
    return result


def _result(prediction: Prediction) -> dict[str, Any]:
    """One image in ``classify --json``."""
    closest: ClassScore = prediction.closest  # type: ignore[assignment]  (always set by classify_files)
    return {"image": prediction.image, "classes": [c.to_dict() for c in prediction.ranked], "unknown": prediction.unknown,
            "similarity": None if prediction.similarity is None else round(prediction.similarity, 6),
            "closest": closest.to_dict()}
