"""A teaching session: an extractor, an imprinting head, and the examples that taught it, kept on disk.

The head lives outside the compiled extractor until export: adding an example is one embedding
and one row update (no re-embedding, no interpreter rebuilt), so the next prediction uses it at
once. Every change is committed to the state folder before the call returns (see
:mod:`lastlayer.teach.store`), and reopening the folder gives back exactly what was taught.
One lock serialises the interpreter and the state, so the camera loop, a web server and a
terminal can predict and teach from different threads; a live loop predicts on :attr:`lanes`
(single-threaded clones of the interpreter on a multi-core CPU) so that frames overlap.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np

from lastlayer.errors import TrainingError
from lastlayer.files import OutputSet
from lastlayer.images import encode_jpeg, load_image, load_resized, resize_array
from lastlayer.learn.imprinting import DEFAULT_SCALE, head_from_sums, leave_one_out, unit_rows
from lastlayer.model.export import extractor_model, read_imprinting_layer, write_head
from lastlayer.model.file import ModelFile, ModelKind
from lastlayer.model.labels import format_labels
from lastlayer.model.normalization import Values, as_values, input_normalization
from lastlayer.report import confusion_matrix
from lastlayer.runtime import Interpreter
from lastlayer.runtime.lanes import Lanes
from lastlayer.teach.store import StateError, StateStore
from lastlayer.zoo import DEFAULT_EXTRACTOR, open_model

ClassRef = Union[int, str]
THUMBNAIL_SIZE = 96


@dataclass(frozen=True)
class ClassInfo:
    """A class of the session: its stable id, name, and how many examples taught it."""

    id: int
    name: str
    examples: int
    trainable: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "examples": self.examples, "trainable": self.trainable}


@dataclass(frozen=True)
class ExampleInfo:
    """One stored example."""

    id: int
    class_id: int
    created: float

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "class_id": self.class_id, "created": self.created}


@dataclass(frozen=True)
class Prediction:
    """The ranked classes for one frame (empty when nothing was taught yet)."""

    classes: list[tuple[str, float]]
    class_ids: list[int]

    @property
    def top(self) -> tuple[str, float] | None:
        return self.classes[0] if self.classes else None

    def to_dict(self) -> dict[str, Any]:
        return {"top_k": [{"class_id": i, "label": label, "score": round(float(score), 6)}
                          for i, (label, score) in zip(self.class_ids, self.classes)]}


@dataclass
class Evaluation:
    """Leave-one-out accuracy per class from the stored embeddings, and the confusion matrix."""

    labels: list[str]
    per_class: dict[str, float | None]
    accuracy: float | None
    confusion: list[list[int]]
    examples: int
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"labels": self.labels, "per_class": self.per_class, "accuracy": self.accuracy,
                "confusion": self.confusion, "examples": self.examples, "notes": self.notes}


class _Class:
    """In memory: the running sum of a class's unit embeddings and its examples."""

    def __init__(self, stored_id: int, name: str, trainable: bool, base: np.ndarray | None, base_shots: int, dim: int) -> None:
        self.id, self.name, self.trainable = stored_id, name, trainable
        self.base = base if base is not None else np.zeros(dim)
        self.base_shots = base_shots
        self.example_ids: list[int] = []
        self.units: list[np.ndarray] = []

    @property
    def count(self) -> int:
        return self.base_shots + len(self.units)

    def weights(self) -> np.ndarray:
        return self.base + (np.sum(self.units, axis=0) if self.units else 0.0)


def _listed(values: tuple[float, ...] | None) -> list[float] | None:
    return None if values is None else list(values)


class TeachingSession:
    """Teach an extractor new classes from images or frames, with every change kept in ``state_dir``.

    Args:
        state_dir: the folder holding the session (created if missing; reopened if it exists).
        model: an extractor or classifier (cut at its embedding), Edge TPU builds included, or a
            model written by ``lastlayer imprint`` (its classes are imported and continued).
            Default: the model the state was created with, else the default extractor.
        scale: ``s`` of ``s * cos`` for a new session (default 48).
        num_threads: interpreter CPU threads.
        input_mean, input_std: the pixel normalisation (one value or one per channel); given values are
            kept in the state and used again when it is reopened without them. Default: decided from
            the model (see :func:`lastlayer.model.normalization.input_normalization`).
    """

    def __init__(self, state_dir: str | os.PathLike[str], model: str | os.PathLike[str] | None = None, *,
                 scale: float | None = None, num_threads: int | None = None, input_mean: Values | str | None = None,
                 input_std: Values | str | None = None) -> None:
        self._lock = threading.RLock()
        self.store = StateStore(state_dir)
        stored_model = self.store.get_meta("model")
        self.base = open_model(model if model is not None else (stored_model["path"] if stored_model else DEFAULT_EXTRACTOR))
        digest = hashlib.sha256(self.base.data).hexdigest()
        if stored_model is None:
            self.store.set_meta("model", {"path": str(Path(self.base.name).resolve()), "sha256": digest})
            self.store.set_meta("scale", float(scale or DEFAULT_SCALE))
            if self.base.kind is ModelKind.IMPRINTING:
                self._import_classes(self.base)
        elif stored_model["sha256"] != digest:
            raise StateError(f"state folder {self.store.folder} was taught with {stored_model['path']}, not {self.base.name}; "
                             "use that model or a new state folder", subject="state")
        self.scale = float(self.store.get_meta("scale"))
        stored_feed = self.store.get_meta("normalization")
        if input_mean is not None or input_std is not None:
            given = {"mean": _listed(as_values(input_mean, "mean")), "std": _listed(as_values(input_std, "std"))}
            if stored_feed is not None and stored_feed != given:
                raise StateError(f"state folder {self.store.folder} was taught with input mean {stored_feed['mean']} and std "
                                 f"{stored_feed['std']}; its examples were embedded that way: use the same or a new state folder",
                                 subject="normalization")
            if stored_feed is None and self.store.examples():
                raise StateError(f"state folder {self.store.folder} already holds examples embedded with the model's own "
                                 "normalisation; use a new state folder for another one", subject="normalization")
            self.store.set_meta("normalization", given)
        given = self.store.get_meta("normalization") or {}
        self.normalization = input_normalization(self.base, given.get("mean"), given.get("std"))
        self.interpreter = Interpreter(extractor_model(self.base), num_threads=num_threads, normalization=self.normalization)
        self.input_size = self.interpreter.input_size
        self.dim = self.interpreter.output_size
        self._classes: list[_Class] = []
        self._lanes = Lanes(self.interpreter, self._lock)
        self._reload()

    # ----------------------------------------------------------------- state
    def _import_classes(self, model: ModelFile) -> None:
        layer = read_imprinting_layer(model)
        norms = {int(k): float(v) for k, v in layer.state.get("norms", {}).items()}
        shots = {int(k): int(v) for k, v in layer.state.get("shots", {}).items()}
        self.store.set_meta("scale", float(layer.scale))
        for index, (row, label) in enumerate(zip(layer.weights, layer.labels)):
            trainable = index in norms
            self.store.add_class(label, np.asarray(row, np.float64) * norms.get(index, 1.0), shots.get(index, 0), trainable)

    def _reload(self) -> None:
        with self._lock:
            classes = {c.id: _Class(c.id, c.name, c.trainable, c.base_weights, c.base_shots, self.dim) for c in self.store.classes()}
            for example in self.store.examples():
                klass = classes.get(example.class_id)
                if klass is not None:
                    klass.example_ids.append(example.id)
                    klass.units.append(example.embedding.astype(np.float64))
            self._classes = list(classes.values())
            self._finetuned = self.store.finetuned_rows()
            self._rebuild_head()

    def _rebuild_head(self) -> None:
        """The head over the classes that have examples (or imported rows)."""
        taught = [c for c in self._classes if c.count > 0]
        self._head_classes = [c.id for c in taught]
        if not taught:
            self._head = None
            return
        sums = np.stack([self._finetuned.get(c.id, c.weights()) for c in taught])
        self._head = head_from_sums(sums, [c.name for c in taught], scale=self.scale, shots=[c.count for c in taught],
                                    trainable=[c.trainable for c in taught],
                                    examples=[np.array(c.units) if c.units else np.zeros((0, self.dim)) for c in taught])

    def _find(self, ref: ClassRef) -> _Class:
        for klass in self._classes:
            if (isinstance(ref, str) and klass.name == ref) or (not isinstance(ref, str) and klass.id == int(ref)):
                return klass
        raise TrainingError(f"there is no class {ref!r}; the classes are: {', '.join(c.name for c in self._classes) or 'none yet'}",
                            subject="class")

    @staticmethod
    def _check_name(name: str) -> str:
        name = str(name).strip()
        if not name or any(ord(ch) < 32 or ord(ch) == 127 for ch in name) or len(name) > 100:
            raise TrainingError(f"class name {name!r} must be 1 to 100 characters without control characters", subject="class")
        return name

    # ----------------------------------------------------------------- classes
    def classes(self) -> list[ClassInfo]:
        """Every class, in creation order."""
        with self._lock:
            return [ClassInfo(c.id, c.name, c.count, c.trainable) for c in self._classes]

    def examples(self, ref: ClassRef | None = None) -> list[ExampleInfo]:
        """The stored examples (of one class, or all), oldest first."""
        with self._lock:
            wanted = None if ref is None else self._find(ref).id
            return [ExampleInfo(e.id, e.class_id, e.created) for e in self.store.examples() if wanted in (None, e.class_id)]

    def add_class(self, name: str) -> ClassInfo:
        """Create an empty class (it joins the predictions with its first example)."""
        name = self._check_name(name)
        with self._lock:
            if any(c.name == name for c in self._classes):
                raise TrainingError(f"a class named {name!r} exists already", subject="class")
            stored = self.store.add_class(name)
            self._classes.append(_Class(stored, name, True, None, 0, self.dim))
            return ClassInfo(stored, name, 0)

    def rename_class(self, ref: ClassRef, name: str) -> ClassInfo:
        name = self._check_name(name)
        with self._lock:
            klass = self._find(ref)
            if any(c.name == name and c is not klass for c in self._classes):
                raise TrainingError(f"a class named {name!r} exists already", subject="class")
            self.store.rename_class(klass.id, name)
            klass.name = name
            self._rebuild_head()
            return ClassInfo(klass.id, name, klass.count, klass.trainable)

    def remove_class(self, ref: ClassRef) -> None:
        """Delete a class and its examples."""
        with self._lock:
            klass = self._find(ref)
            self.store.remove_class(klass.id)
            self._classes.remove(klass)
            self._finetuned = {}
            self._rebuild_head()

    # ----------------------------------------------------------------- teaching
    def _pixels(self, image: Any) -> np.ndarray:
        """Model-sized RGB pixels from an array (any size), a frame (``.pixels``) or an image file."""
        if hasattr(image, "pixels"):
            image = image.pixels
        if isinstance(image, np.ndarray):
            return resize_array(image, self.input_size)
        return load_resized(image, self.input_size)

    def embed(self, image: Any, *, lane: int | None = None) -> np.ndarray:
        """The unit embedding of one image (array, frame or file); ``lane``: see :meth:`predict`."""
        vector = self._lanes.run(self._pixels(image), lane)
        return unit_rows(vector[np.newaxis].astype(np.float64))[0]

    def add_examples(self, ref: ClassRef, images: Any | Sequence[Any]) -> list[ExampleInfo]:
        """Add one image or several (arrays, frames or files) to a class; creates the class when named new.

        Returns the stored examples: once this returns, they are on disk.
        """
        batch = list(images) if isinstance(images, (list, tuple)) else [images]
        if not batch:
            return []
        units = np.stack([self.embed(image) for image in batch])
        thumbnails = [_thumbnail(image) for image in batch]
        with self._lock:
            if isinstance(ref, str) and not any(c.name == ref for c in self._classes):
                self.add_class(ref)
            klass = self._find(ref)
            if not klass.trainable:
                raise TrainingError(f"class {klass.name!r} came with the model and cannot take new examples", subject="class")
            ids = self.store.add_examples(klass.id, units, thumbnails)
            klass.example_ids.extend(ids)
            klass.units.extend(units)
            self._finetuned = {}
            self._rebuild_head()
            return [ExampleInfo(i, klass.id, 0.0) for i in ids]

    def remove_example(self, example_id: int) -> None:
        """Delete one stored example; its class's row is recomputed from the others."""
        with self._lock:
            for klass in self._classes:
                if example_id in klass.example_ids:
                    position = klass.example_ids.index(example_id)
                    self.store.remove_example(example_id)
                    del klass.example_ids[position], klass.units[position]
                    self._finetuned = {}
                    self._rebuild_head()
                    return
        raise TrainingError(f"there is no example {example_id}", subject="example")

    def undo(self) -> ExampleInfo | None:
        """Forget the most recently added example; ``None`` when there is none."""
        with self._lock:
            newest = max(((i, c) for c in self._classes for i in c.example_ids), default=None, key=lambda pair: pair[0])
            if newest is None:
                return None
            self.remove_example(newest[0])
            return ExampleInfo(newest[0], newest[1].id, 0.0)

    def thumbnail(self, example_id: int) -> bytes:
        """The stored JPEG thumbnail of an example."""
        data = self.store.thumbnail(example_id)
        if data is None:
            raise TrainingError(f"there is no example {example_id}", subject="example")
        return data

    # ----------------------------------------------------------------- predicting
    @property
    def lanes(self) -> int:
        """How many predictions may run at the same time (``predict(..., lane=i)`` from different threads)."""
        return len(self._lanes)

    def predict(self, image: Any, top_k: int = 3, *, lane: int | None = None) -> Prediction:
        """The ``top_k`` classes for one image (array, frame or file).

        ``lane`` (``0 .. lanes - 1``) runs the extractor on that lane's interpreter, outside the session's
        lock, so that a live loop predicts several frames at once while teaching goes on.
        """
        return self.predict_embedding(self.embed(image, lane=lane), top_k)

    def predict_embedding(self, unit: np.ndarray, top_k: int = 3) -> Prediction:
        with self._lock:
            if self._head is None:
                return Prediction([], [])
            scores = self._head.predict_proba(unit[np.newaxis])[0]
            order = np.argsort(-scores, kind="stable")[: max(1, int(top_k))]
            labels = self._head.labels
            return Prediction([(labels[i], float(scores[i])) for i in order], [self._head_classes[i] for i in order])

    # ----------------------------------------------------------------- refining, evaluating, exporting
    def finetune(self, steps: int = 300, learning_rate: float = 0.1) -> dict[str, Any]:
        """Refine the rows on the stored examples (kept until the examples change; never worse than before).

        Returns what happened: steps run, best step, loss before and after, and on what the loss was watched.
        """
        with self._lock:
            if self._head is None or len(self._head_classes) < 2:
                raise TrainingError("fine-tuning needs at least 2 classes with examples", subject="class")
            result = self._head.finetune(steps, learning_rate)
            rows = {cid: klass.weights for cid, klass in zip(self._head_classes, self._head.classes_)}
            self.store.set_finetuned_rows(rows)
            self._finetuned = rows
            self._rebuild_head()
            return {"steps": result.steps_run, "loss_before": result.loss_before, "loss_after": result.loss_after,
                    "best_step": result.best_step, "monitored_on": result.monitored_on, "summary": result.summary()}

    def evaluate(self) -> Evaluation:
        """Leave-one-out accuracy per class from the stored embeddings (no image is embedded again)."""
        with self._lock:
            taught = [c for c in self._classes if c.units]
            labels = [c.name for c in taught]
            if len(taught) < 2:
                return Evaluation(labels, {n: None for n in labels}, None, [], sum(len(c.units) for c in taught),
                                  ["evaluation needs at least 2 classes with examples"])
            units = np.concatenate([np.array(c.units) for c in taught])
            y = np.concatenate([np.full(len(c.units), i) for i, c in enumerate(taught)])
            predicted = leave_one_out(units, y, len(taught), self.scale)
        per_class: dict[str, float | None] = {}
        notes = []
        for index, klass in enumerate(taught):
            if len(klass.units) < 2:
                per_class[klass.name] = None
                notes.append(f"class {klass.name!r} has 1 example: leave-one-out needs at least 2")
            else:
                per_class[klass.name] = float(np.mean(predicted[y == index] == index))
        counted = np.isin(y, [i for i, c in enumerate(taught) if len(c.units) >= 2])
        accuracy = float(np.mean(predicted[counted] == y[counted])) if counted.any() else None
        matrix = confusion_matrix(y[predicted >= 0], predicted[predicted >= 0], len(taught)).tolist()
        return Evaluation(labels, per_class, accuracy, matrix, len(y), notes)

    def export_bytes(self) -> bytes:
        """The taught model as one self-contained ``.tflite`` (the same layout ``lastlayer imprint`` writes)."""
        with self._lock:
            if self._head is None:
                raise TrainingError("nothing to export yet: add examples to a class first", subject="class")
            return write_head(self.base, self._head.export(), normalization=self.normalization)

    def export(self, out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``model.tflite`` and ``labels.txt`` into ``out_dir``; returns both paths."""
        with self._lock:
            data, labels = self.export_bytes(), list(self._head.labels)
        with OutputSet(out_dir) as out:  # the two files appear together or not at all
            out.add_bytes("model.tflite", data)
            out.add_text("labels.txt", format_labels(labels))
            paths = out.commit()
        return paths["model.tflite"], paths["labels.txt"]

    @property
    def labels(self) -> list[str]:
        """The names of the classes that predictions can return."""
        with self._lock:
            return [] if self._head is None else list(self._head.labels)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> TeachingSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _thumbnail(image: Any) -> bytes | None:
    """A small JPEG of the image for review (``None`` if it cannot be made)."""
    from PIL import Image

    try:
        if hasattr(image, "pixels"):
            image = image.pixels
        picture = Image.fromarray(np.asarray(image, dtype=np.uint8)) if isinstance(image, np.ndarray) else load_image(image)
        picture.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        return encode_jpeg(picture, quality=80)
    except (OSError, ValueError, TypeError):
        return None


def open_session(state_dir: str | os.PathLike[str], model: str | os.PathLike[str] | None = None, **options: Any) -> TeachingSession:
    """Open (or create) the session in ``state_dir``; see :class:`TeachingSession`."""
    return TeachingSession(state_dir, model, **options)



