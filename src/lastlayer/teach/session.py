"""A teaching session: an extractor, an imprinting head, and the examples that taught it, kept in a state folder.

A coordinator of the :class:`~lastlayer.teach.store.StateStore` (the state on disk: the one source of
truth, shared by every process using the folder), an :class:`~lastlayer.teach.embedder.Embedder` and a
:class:`~lastlayer.teach.replica.Replica` (the store as one ImprintingHead, kept current). Adding an
example is one embedding (none for a frame whose prediction brought it) and one durable commit, and
the next prediction uses it; other processes' changes show in predictions within 0.1 s, and at once
after :meth:`TeachingSession.refresh`. Thread-safe: predictions never wait for a change being
stored, another process's lock, or a fine-tune. A session on a classifier may keep its own classes and
append the state's after them (:mod:`lastlayer.teach.kept`).

Predictions honour an unknown rule fitted on the stored embeddings (kept current by the replica, and
stored with an export), and a live loop may keep the frames they were unsure about in
:attr:`TeachingSession.uncertain`, to be taught with :meth:`TeachingSession.teach_uncertain`.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar, Union

import numpy as np

from lastlayer.errors import ConflictError, NotFoundError, TrainingError
from lastlayer.files.names import checked_name, name_key
from lastlayer.files.outputs import OutputSet
from lastlayer.layer import AppendedClasses
from lastlayer.learn.cosine import LeaveOneOutReport, leave_one_out_report
from lastlayer.learn.keep import KeepClassesHead
from lastlayer.model.export import write_head
from lastlayer.model.keep import write_appended_classes
from lastlayer.model.labels import format_labels
from lastlayer.model.normalization import Values
from lastlayer.runtime.prediction import Prediction
from lastlayer.teach.binding import bind_model
from lastlayer.teach.embedder import Embedder, thumbnail
from lastlayer.teach.kept import Origin, kept_evaluation, set_keeping
from lastlayer.teach.replica import Replica, RuleKeeper
from lastlayer.teach.store import StateError, StateStore
from lastlayer.teach.uncertain import UncertainFrame, UncertainQueue

ClassRef = Union[int, str]
T = TypeVar("T")
Evaluation = LeaveOneOutReport  # what :meth:`TeachingSession.evaluate` returns


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


class TeachingSession:
    """Teach an extractor new classes from images or frames, with every change kept in ``state_dir``.

    Args:
        state_dir: the folder holding the state (created if missing; reopened if it exists).
        model: an extractor or classifier (cut at its embedding), Edge TPU builds included, or a
            model written by ``lastlayer imprint`` (its classes are imported and continued).
            Default: the model the state was created with, else the default extractor.
        scale: ``s`` of ``s * cos`` for a new state (default 48).
        num_threads: interpreter CPU threads.
        input_mean, input_std: the pixel normalisation (one value or one per channel); given values are
            kept in the state and used again when it is reopened without them. Default: decided from
            the model (see :func:`lastlayer.model.normalization.input_normalization`).
        read_only: follow an existing state without changing anything in its folder (``StateError``
            when the folder holds no state; every change raises ``StateError``).
        busy_timeout: seconds a change waits while another process writes, before
            :class:`~lastlayer.errors.BusyError` (default: ``$LASTLAYER_BUSY_TIMEOUT``, else 5).
        keep_classes: keep a classifier's own classes: predictions rank them with the state's classes,
            and the export is the classifier with the state's classes appended after its own
            (:class:`~lastlayer.errors.ModelError` for a model without a class layer lastlayer can find).
            Kept in the state, fixed once it holds a class. Default: the state's setting; for a new
            state, true for a model that has classes appended so (they are imported) and false otherwise.
            An imprinted model's classes are always continued.
        unknown: apply an unknown rule derived from the stored examples (a prediction of none of the
            classes says ``unknown``; an export stores the rule); False: rank the classes only.
        unknown_threshold: answer unknown below this similarity instead of the derived threshold.

    :attr:`uncertain` keeps the frames a live loop of the session found unsure (``LiveLoop(session,
    source)`` fills it); :meth:`uncertain_frames` lists them, :meth:`teach_uncertain` teaches one to a
    class, :meth:`dismiss_uncertain` forgets one (the API a terminal or a page calls).
    """

    def __init__(self, state_dir: str | os.PathLike[str], model: str | os.PathLike[str] | None = None, *,
                 scale: float | None = None, num_threads: int | None = None, input_mean: Values | str | None = None,
                 input_std: Values | str | None = None, read_only: bool = False, busy_timeout: float | None = None,
                 keep_classes: bool | None = None, unknown: bool = True, unknown_threshold: float | None = None) -> None:
        if unknown_threshold is not None and (not unknown or not math.isfinite(float(unknown_threshold))):
            raise TrainingError("the unknown threshold must be a finite number, and goes with the unknown answer turned on",
                                subject="unknown_threshold")
        self.store = StateStore(state_dir, read_only=read_only, busy_timeout=busy_timeout)
        try:
            self.base, self.scale, self.normalization, self.model_classes = bind_model(
                self.store, model, scale, input_mean, input_std, keep_classes)
            self.embedder = Embedder(self.base, self.normalization, num_threads)
        except BaseException:
            self.store.close()
            raise
        self._replica = Replica(self.store, self.embedder.dim, self.scale, model_classes=self.model_classes,
                                rule=RuleKeeper(unknown, None if unknown_threshold is None else float(unknown_threshold)))
        self._replica.refresh(force=True)
        self._closing = threading.Event()
        self.uncertain = UncertainQueue()

    @property
    def input_size(self) -> tuple[int, int]:
        return self.embedder.input_size

    @property
    def lanes(self) -> int:
        """How many predictions may run at the same time (``predict(..., lane=i)`` from different threads)."""
        return self.embedder.lanes

    @property
    def revision(self) -> int:
        """The state's revision this session knows (bumped by every change of any process)."""
        return self._replica.revision

    def refresh(self) -> bool:
        """Catch up with the changes of other processes now; returns whether there were any."""
        return self._replica.refresh(force=True)

    # ----------------------------------------------------------------- classes
    def classes(self) -> list[ClassInfo]:
        """Every class, in creation order."""
        self._replica.refresh()
        return [ClassInfo(c.id, c.name, count, c.trainable) for c, count in self._replica.classes()]

    def class_info(self, ref: ClassRef) -> ClassInfo:
        """One class, by id or name (:class:`~lastlayer.errors.NotFoundError` if there is none); the model's own
        classes too, when kept."""
        class_id = self._class_id(ref)
        own = self._own_label(class_id)
        if own is not None:
            return ClassInfo(class_id, own, 0, trainable=False)
        classes = self.classes()
        found = next((info for info in classes if info.id == class_id), None)
        if found is None:
            raise _no_class(class_id, classes)
        return found

    def _class_id(self, ref: ClassRef, *, create: bool = False) -> int:
        """The id of a class named or numbered ``ref``; a new class for an unknown name with ``create``."""
        if not isinstance(ref, str):
            return int(ref)
        self._replica.refresh()
        found = self._find(ref)
        if found is None and self._replica.refresh(force=True):
            found = self._find(ref)
        if found is not None:
            return found.id
        own = self._own_id(ref)
        if own is not None:
            return own
        if not create:
            raise _no_class(ref, self.classes())
        try:
            return self.add_class(ref).id
        except ConflictError:  # another process created it meanwhile
            return self._class_id(ref)

    def _find(self, name: str) -> Any:
        """The stored class named ``name`` or a look-alike of it (the same :func:`~lastlayer.files.names.name_key`), or None."""
        key = name_key(name)
        return next((stored for stored, _ in self._replica.classes() if name_key(stored.name) == key), None)

    def _on_class(self, ref: ClassRef, change: Callable[[int], T], *, create: bool = False) -> T:
        """``change(class id)`` for the class ``ref``; a name is looked up again if its class was deleted meanwhile.
        The model's own classes (kept) take no change: :class:`ConflictError`."""
        try:
            return change(self._refuse_own(self._class_id(ref, create=create)))
        except NotFoundError:
            if not isinstance(ref, str) or not self._replica.refresh(force=True):
                raise
            return change(self._refuse_own(self._class_id(ref, create=create)))

    def examples(self, ref: ClassRef | None = None) -> list[ExampleInfo]:
        """The stored examples (of one class, or all), oldest first."""
        if ref is not None and self._own_label(self._class_id(ref)) is not None:
            return []  # (the model's own classes have none)
        stored = self.store.examples() if ref is None else self._on_class(ref, self.store.examples)
        return [ExampleInfo(e.id, e.class_id, e.created) for e in stored]

    def _stored(self, result: T) -> T:
        """``result`` of a change just stored, once this session's head holds the change too."""
        self._replica.refresh(force=True)
        return result

    def add_class(self, name: str) -> ClassInfo:
        """Create an empty class (it joins the predictions with its first example)."""
        name = self._refuse_own_name(_check_name(name))
        return self._stored(ClassInfo(self.store.add_class(name), name, 0))

    def rename_class(self, ref: ClassRef, name: str) -> ClassInfo:
        name = self._refuse_own_name(_check_name(name))
        return self.class_info(self._stored(self._on_class(ref, lambda found: self.store.rename_class(found, name) or found)))

    def remove_class(self, ref: ClassRef) -> None:
        """Delete a class and its examples."""
        self._stored(self._on_class(ref, self.store.remove_class))

    # ----------------------------------------------------------------- teaching
    def embed(self, image: Any, *, lane: int | None = None) -> np.ndarray:
        """The embedding of one image (array, frame or file) as the state stores it: unit, or as the extractor
        gives it when the model's own classes are kept; ``lane``: see :meth:`predict`."""
        return self.embedder.embed(image, lane=lane, unit=self._replica.keep is None)

    def add_examples(self, ref: ClassRef, images: Any | Sequence[Any], *,
                     embeddings: Sequence[np.ndarray | None] | None = None) -> list[ExampleInfo]:
        """Add one image or several (arrays, frames or files) to a class; creates the class when named new.

        ``embeddings``: the images' unit embeddings when already known (e.g. ``prediction.embedding`` of
        the frame on screen; ``None`` entries are embedded here), so a frame is not embedded twice.
        Returns the stored examples: once this returns, they are on disk.
        """
        batch = list(images) if isinstance(images, (list, tuple)) else [images]
        if not batch:
            return []
        units = self.embedder.units(batch, embeddings, unit=self._replica.keep is None)
        thumbnails = [thumbnail(image) for image in batch]
        added = self._on_class(ref, lambda class_id: self.store.add_examples(class_id, units, thumbnails), create=True)
        return self._stored([ExampleInfo(e.id, e.class_id, e.created) for e in added])

    def add_labelled_examples(self, names: Sequence[str], images: Sequence[Any], *,
                              embeddings: Sequence[np.ndarray | None] | None = None,
                              digests: Sequence[str | None] | None = None) -> list[ExampleInfo]:
        """Add images to the classes named beside them (created when new), all in one change: every image is stored, or none.

        ``embeddings``: as in :meth:`add_examples`; ``digests``: the content digest of each image's file, kept so
        that :meth:`known_digests` finds it (see :mod:`lastlayer.teach.importer`).
        """
        names = [_check_name(name) for name in names]
        if len(names) != len(images) or (digests is not None and len(digests) != len(images)):
            raise TrainingError("give one class name (and one digest) per image", subject="class")
        if not names:
            return []
        units = self.embedder.units(list(images), embeddings)
        thumbnails = [thumbnail(image) for image in images]
        added = self.store.add_labelled(names, units, thumbnails, list(digests) if digests is not None else [None] * len(names))
        return self._stored([ExampleInfo(e.id, e.class_id, e.created) for e in added])

    def known_digests(self, digests: Sequence[str]) -> set[str]:
        """Those of ``digests`` (content digests of image files) that an example of the state was added from."""
        return self.store.known_digests(list(digests))

    def remove_example(self, example_id: int) -> None:
        """Delete one stored example; its class's row is recomputed from the others."""
        self._stored(self.store.remove_example(int(example_id)))

    def undo(self) -> ExampleInfo | None:
        """Forget the most recently added example (by any process); ``None`` when there is none."""
        removed = self._stored(self.store.remove_example(None))
        return None if removed is None else ExampleInfo(removed.id, removed.class_id, removed.created)

    def thumbnail(self, example_id: int) -> bytes:
        """The stored JPEG thumbnail of an example."""
        return self.store.thumbnail(example_id)

    def uncertain_frames(self) -> list[UncertainFrame]:
        """The frames the live loop was unsure about (unknown, or two classes nearly tied), most recently seen first:
        each with ``id``, ``reason``, ``describe()``, ``thumbnail`` (JPEG) and ``to_dict()``."""
        return self.uncertain.items()

    def dismiss_uncertain(self, item_id: int) -> UncertainFrame:
        """Forget one uncertain frame (:class:`~lastlayer.errors.NotFoundError` when it is no longer kept)."""
        return self.uncertain.dismiss(item_id)

    def teach_uncertain(self, item_id: int, ref: ClassRef) -> list[ExampleInfo]:
        """Add the frame :attr:`uncertain` keeps as ``item_id`` to a class (created when named new), with the embedding
        its prediction computed (no second embedding); it then leaves the queue. Its thumbnail is the example's."""
        from lastlayer.images.decode import decode_image_bytes

        item = self.uncertain.get(item_id)
        if item.embedding is None:
            raise ConflictError(f"uncertain frame {item_id} came without an embedding (a model without an unknown rule); "
                                "teach it from its picture instead", subject="uncertain")
        picture = decode_image_bytes(item.thumbnail, name=f"uncertain frame {item_id}") if item.thumbnail else \
            np.zeros((1, 1, 3), np.uint8)
        added = self.add_examples(ref, picture, embeddings=[item.embedding.astype(np.float64)])
        self.uncertain.dismiss(item_id)
        return added

    # ----------------------------------------------------------------- predicting
    def predict(self, image: Any, top_k: int = 3, *, lane: int | None = None) -> Prediction:
        """The ``top_k`` classes for one image (array, frame or file).

        ``lane`` (``0 .. lanes - 1``) runs the extractor on that lane's interpreter, so that a live loop
        predicts several frames at once while teaching goes on.
        """
        self._replica.refresh()  # (so that the embedding is of the kind the head takes)
        return self.predict_embedding(self.embed(image, lane=lane), top_k)

    def predict_embedding(self, unit: np.ndarray, top_k: int = 3) -> Prediction:
        """The ``top_k`` classes for a unit embedding, and whether the unknown rule says it is of none of them."""
        self._replica.refresh()
        scores = self._replica.scores(unit)
        return Prediction.from_scores(scores.probabilities, scores.labels, ids=scores.class_ids, top_k=max(1, int(top_k)),
                                      revision=scores.revision, embedding=unit, unknown=scores.unknown,
                                      similarity=scores.similarity)

    def unknown_rule(self) -> dict[str, Any]:
        """The unknown rule predictions apply now: ``{"active", "threshold", "derived_threshold", "examples", "note"}``
        (``note``: why there is none, e.g. too few examples)."""
        self._replica.refresh()
        keeper = self._replica.rule
        rule = keeper.rule
        threshold = None if rule is None else (keeper.threshold if keeper.threshold is not None else rule.threshold)
        return {"active": rule is not None, "threshold": None if threshold is None else round(threshold, 6),
                "derived_threshold": None if rule is None else round(rule.threshold, 6),
                "examples": 0 if rule is None else int(sum(rule.examples)), "note": keeper.note,
                "text": keeper.note if rule is None else f"unknown below similarity {threshold:.3f}"}

    # ----------------------------------------------------------------- refining, evaluating, exporting
    def finetune(self, steps: int = 300, learning_rate: float = 0.1) -> dict[str, Any]:
        """Refine the rows on the stored examples (kept until the examples change; never worse than before).

        Runs on a copy of the head, so predictions go on meanwhile; if the examples changed in the
        meantime, nothing is kept and :class:`~lastlayer.errors.ConflictError` says so. Returns what
        happened: steps run, best step, loss before and after, and on what the loss was watched.
        """
        self._replica.refresh(force=True)
        head, class_ids, basis = self._replica.head_copy()
        if isinstance(head, KeepClassesHead):
            raise TrainingError("fine-tuning refines imprinted (cosine) rows; classes appended after a classifier's own are "
                                "not fine-tuned (measured on 4 classifiers it changed new-class accuracy by -0.08 to +0.04)",
                                subject="finetune")
        if head is None or sum(len(head.examples(i)) > 0 for i in range(head.num_classes)) < 2:
            raise TrainingError("fine-tuning needs at least 2 classes with examples", subject="class")
        result = head.finetune(steps, learning_rate, stop=self._closing)  # (a closing session does not wait for it)
        if self._closing.is_set():
            raise StateError(f"the state in {self.store.folder} was closed during the fine-tune; nothing was kept", subject="state")
        sums = head.sums()
        self._stored(self.store.set_finetuned_rows({cid: sums[i] for i, cid in enumerate(class_ids) if head.is_trainable(i)}, basis))
        return {"steps": result.steps_run, "loss_before": result.loss_before, "loss_after": result.loss_after,
                "best_step": result.best_step, "monitored_on": result.monitored_on, "nothing_to_learn": result.nothing_to_learn,
                "summary": result.summary()}

    def evaluate(self) -> Evaluation:
        """Leave-one-out accuracy per class from the stored embeddings (no image is embedded again); with the model's
        own classes kept, a :class:`~lastlayer.teach.kept.KeptEvaluation` (they compete, and how they fared)."""
        self._replica.refresh()
        kept = self._replica.head_copy()[0] if self._replica.keep is not None else None
        if isinstance(kept, KeepClassesHead):
            return kept_evaluation(kept, self.model_classes.layer())
        units, labels = self._replica.with_head(
            lambda head, _: ([], []) if head is None else ([head.examples(i) for i in range(head.num_classes)], head.labels))
        return leave_one_out_report(units, labels, self.scale)

    def _exported(self) -> tuple[bytes, list[str]]:
        self._replica.refresh()
        layer = self._replica.exported()  # carrying the unknown rule predictions apply (none if turned off or too few)
        if layer is None:
            raise ConflictError("nothing to export yet: add examples to a class first", subject="class")
        if isinstance(layer, AppendedClasses):  # the state's classes after the classifier's own
            # (the unknown rule of such a model goes into layer.metadata here, see lastlayer.model.keep)
            return write_appended_classes(self.base, layer, normalization=self.normalization), list(layer.labels)
        return write_head(self.base, layer, normalization=self.normalization), list(layer.labels)

    def export_bytes(self) -> bytes:
        """The taught model as one self-contained ``.tflite`` (the same layout ``lastlayer imprint`` writes), with the
        unknown rule the predictions apply (see :meth:`unknown_rule`)."""
        return self._exported()[0]

    def export(self, out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``model.tflite`` and ``labels.txt`` into ``out_dir``; returns both paths."""
        data, labels = self._exported()
        with OutputSet(out_dir) as out:  # the two files appear together or not at all
            out.add_bytes("model.tflite", data)
            out.add_text("labels.txt", format_labels(labels))
            paths = out.commit()
        return paths["model.tflite"], paths["labels.txt"]

    @property
    def labels(self) -> list[str]:
        """The names of the classes that predictions can return."""
        self._replica.refresh()
        return self._replica.with_head(lambda head, _: [] if head is None else list(head.labels))

    # ----------------------------------------------------------------- the model's own classes (kept)
    def origin(self) -> Origin:
        """The model the session started from, and whether its own classes are kept (or could still be)."""
        self._replica.refresh()
        kept = self._replica.keep is not None
        kind = self.base.kind.value
        can_keep = not kept and not self.store.read_only and not self._replica.classes() and self.model_classes.keepable
        return Origin(Path(self.base.name).name, kind, self.model_classes.count, kept, can_keep)

    def keep_model_classes(self, keep: bool = True) -> Origin:
        """Keep the model's own classes from now on (or stop keeping them): only while the state holds no class
        (:class:`~lastlayer.errors.ConflictError` otherwise; :class:`~lastlayer.errors.ModelError` for a model
        without a class layer lastlayer can find). Every process on the state follows."""
        set_keeping(self.store, self.model_classes, bool(keep))
        self._replica.refresh(force=True)
        return self.origin()

    def own_classes(self) -> list[ClassInfo]:
        """The model's own classes when kept (fixed: no examples, ids ``0 .. C-1``), else none."""
        self._replica.refresh()
        if self._replica.keep is None:
            return []
        return [ClassInfo(index, label, 0, trainable=False) for index, label in enumerate(self.model_classes.labels())]

    def _own_label(self, class_id: int) -> str | None:
        """The name of the model's own class ``class_id`` when kept (the state's classes have higher ids), else None."""
        if self._replica.keep is None or not 0 <= class_id < self._replica.keep["classes"]:
            return None
        return self.model_classes.labels()[class_id]

    def _own_id(self, name: str) -> int | None:
        return self.model_classes.find(name) if self._replica.keep is not None else None

    def _refuse_own(self, class_id: int) -> int:
        own = self._own_label(class_id)
        if own is not None:
            raise ConflictError(f"class {own!r} came with the model and cannot take new examples, be renamed or be deleted",
                                subject="class")
        return class_id

    def _refuse_own_name(self, name: str) -> str:
        if self._own_id(name) is not None:
            raise ConflictError(f"a class named {name!r} exists already: one of the model's own classes (they take no "
                                "examples); choose another name", subject="class")
        return name

    def close(self) -> None:
        """Close the state; a fine-tune or a change still running gives up (nothing of it is stored)."""
        self._closing.set()
        self.store.close()

    def __enter__(self) -> TeachingSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_name(name: str) -> str:
    """The rule of :mod:`lastlayer.files.names`: NFC, no line breaks, controls or invisible characters, 1 to 100 characters."""
    return checked_name(name, "class name", TrainingError)


def _no_class(ref: ClassRef, classes: list[ClassInfo]) -> NotFoundError:
    return NotFoundError(f"there is no class {ref!r}; the classes are: {', '.join(c.name for c in classes) or 'none yet'}",
                         subject="class")
