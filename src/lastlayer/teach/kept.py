"""A classifier's own classes in a teaching state: kept as the model has them, the state's classes appended after them.

A state keeps them when asked (``TeachingSession(..., keep_classes=True)``, ``lastlayer teach --keep-classes``,
or the page's "keep its classes" while the state holds no class yet), or when its model already has classes
appended this way (those are imported as the state's first classes, as an imprinted model's are). The setting
is the state's ``keep_classes`` meta entry, so every process on the state follows it, and the state's classes
get ids from the model's class count on: the model's own classes keep their ids ``0 .. C-1``. They take no
examples and cannot be renamed or deleted.

Predictions come from a :class:`~lastlayer.learn.keep.KeepClassesHead` over the model's class layer, on the
extractor's raw embeddings (the original logits need them: such a state stores its examples unnormalised),
and score as the exported model does (float); the export is the classifier with the state's classes appended
(:func:`~lastlayer.model.keep.write_appended_classes`), its own layer, biases and labels bit for bit.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from lastlayer.errors import ModelError
from lastlayer.jobs.keep import kept_report
from lastlayer.learn.cosine import LeaveOneOutReport
from lastlayer.learn.keep import KeepClassesHead
from lastlayer.model.file import ModelFile, ModelKind
from lastlayer.model.keep import ClassLayer, read_class_layer
from lastlayer.report.metrics import confusion_matrix
from lastlayer.teach.store import StateStore, StoredClass

Setting = dict[str, Any]  # the state's keep_classes entry: "classes" (C), "threshold", "scale", "imported"


@dataclass(frozen=True)
class Origin:
    """The model a session started from, and what became of its own classes.

    Attributes:
        model: its file name.
        kind: ``classifier``, ``extractor``, ``imprinting`` or ``other``.
        classes: how many classes the model has of its own (before any it had appended; 0 for an extractor).
        kept: predictions include a classifier's own classes, fixed (this state keeps them).
        can_keep: they could still be kept: a classifier whose classes are not kept, and a state that holds
            no class yet and may be changed.
    """

    model: str
    kind: str
    classes: int
    kept: bool
    can_keep: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class KeptEvaluation(LeaveOneOutReport):
    """Leave-one-out over the state's classes with the model's own classes competing (an example that scores
    highest as one of them counts as a miss, outside the confusion matrix), and ``kept``: how the own classes
    fared on the examples (:func:`lastlayer.jobs.keep.kept_report`: the examples the model still ranks first as
    an own class, the own class each new class looks like, warnings, the gate's settings)."""

    kept: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "kept": self.kept}


class ModelClasses:
    """A model's own classes: its class layer (read once, when first needed) and a head over it."""

    def __init__(self, model: ModelFile) -> None:
        self.model = model
        self._lock = threading.Lock()
        self._layer: ClassLayer | ModelError | None = None
        self._template: tuple[tuple[Any, Any], KeepClassesHead] | None = None
        self._names: dict[str, int] | None = None

    def layer(self) -> ClassLayer:
        """The class layer (:class:`~lastlayer.errors.ModelError` for a model without one lastlayer can find)."""
        with self._lock:
            if self._layer is None:
                if self.model.kind is ModelKind.IMPRINTING:
                    raise ModelError(f"{self.model.name} is an imprinted model: its classes are the state's own classes "
                                     "already (keeping them is for classifiers)", subject="keep_classes")
                try:
                    self._layer = read_class_layer(self.model)
                except ModelError as error:
                    self._layer = error  # (read once, refused ever after)
            if isinstance(self._layer, ModelError):
                raise ModelError(str(self._layer), subject="keep_classes")
            return self._layer

    @property
    def keepable(self) -> bool:
        """Whether the model has a class layer whose classes can be kept."""
        try:
            return self.model.kind is ModelKind.CLASSIFIER and self.layer() is not None
        except ModelError:
            return False

    @property
    def count(self) -> int:
        """How many classes the model has of its own (before any it had appended; 0 for an extractor)."""
        if self.keepable:
            return self.layer().num_classes
        if self.model.kind in (ModelKind.CLASSIFIER, ModelKind.IMPRINTING):
            graph = self.model.tree.subgraphs[0]
            return int(graph.tensors[graph.outputs[0]].shape[-1])
        return 0

    def head(self, setting: Setting) -> KeepClassesHead:
        """A head over the class layer with the setting's threshold and scale, without new classes."""
        key = (setting.get("threshold"), setting.get("scale"))
        layer = self.layer()
        with self._lock:
            if self._template is None or self._template[0] != key:
                self._template = (key, KeepClassesHead(layer.weights, layer.bias, layer.labels, threshold=key[0], scale=key[1],
                                                       logit_range=layer.logit_range, max_logit_shift=layer.max_logit_shift))
            return copied(self._template[1], new_classes=False)

    def labels(self) -> list[str]:
        """The own classes' names, in id order (ids as text where the model has no labels)."""
        layer = self.layer()
        return list(layer.labels) if layer.labels is not None else [str(i) for i in range(layer.num_classes)]

    def find(self, name: str) -> int | None:
        """The id of the first own class named ``name``, or ``None``."""
        if self._names is None:
            labels = self.labels()
            self._names = {label: index for index, label in reversed(list(enumerate(labels)))}
        return self._names.get(name)


def copied(head: KeepClassesHead, *, new_classes: bool = True) -> KeepClassesHead:
    """A copy of ``head`` to change or read outside a lock: its own new classes (or none), the original layer's
    arrays shared (they never change)."""
    twin = copy.copy(head)
    twin.new_classes_ = copy.deepcopy(head.new_classes_) if new_classes else []
    return twin


def keep_setting(own: ModelClasses) -> tuple[Setting, list[tuple[str, np.ndarray, int, dict[str, Any]]]]:
    """The setting a state keeps ``own``'s classes with, and the classes the model had appended (to import):
    name, sum of embeddings, count, and their affinity and peak."""
    layer = own.layer()
    saved = KeepClassesHead.from_class_layer(layer)  # with the classes appended before, if any
    setting = {"classes": layer.num_classes, "threshold": saved.threshold, "scale": saved.given_scale}
    return setting, [(c.label, c.total, c.count, {"affinity": c.affinity, "peak": c.peak}) for c in saved.new_classes_]


def set_keeping(store: StateStore, own: ModelClasses, keep: bool) -> None:
    """Keep ``own``'s classes in the state (or stop): only while it holds no class (else ConflictError)."""
    if not keep:
        store.start_keeping(None)
        return
    setting, imported = keep_setting(own)
    store.start_keeping(setting, setting["classes"], imported)


def kept_head(own: ModelClasses, setting: Setting, members: Sequence[StoredClass],
              examples: dict[int, list[np.ndarray]]) -> KeepClassesHead:
    """The head over the model's own classes and the state's ``members`` (in order): imported sums, stored examples."""
    head = own.head(setting)
    imported = setting.get("imported") or {}
    for klass in members:
        index = head.num_classes
        if klass.base_weights is not None:
            saved = imported.get(str(klass.id), {})
            index = head.add_saved_class(klass.name, klass.base_weights, klass.base_shots, saved.get("affinity", np.nan),
                                         saved.get("peak", np.nan))
        if examples.get(klass.id):
            head.add(np.stack(examples[klass.id]), index, klass.name)
    return head


def kept_evaluation(head: KeepClassesHead, layer: ClassLayer) -> KeptEvaluation:
    """Leave-one-out of the new classes' examples (each predicted by the head with its class rebuilt without it)
    and the shot report, for a head (a copy: this takes a while) of a state that keeps the model's classes."""
    truth, predicted = head.leave_one_out()
    first = head.base_classes
    taught = [k for k, klass in enumerate(head.new_classes_) if klass.examples]
    names = [head.new_classes_[k].label for k in taught]
    position = {first + k: i for i, k in enumerate(taught)}
    y = np.array([position[t] for t in truth], dtype=np.int64)
    guessed = np.array([position.get(int(p), -1) for p in predicted], dtype=np.int64)
    per_class: dict[str, float | None] = {}
    notes = [] if taught else ["evaluation needs examples of a class of the state"]
    for i, name in enumerate(names):
        mine = y == i
        per_class[name] = float(np.mean(guessed[mine] == i)) if mine.any() else None
        if not mine.any():
            notes.append(f"class {name!r} has 1 example: leave-one-out needs at least 2")
    lost = int(np.sum(guessed < 0))
    if lost:
        notes.append(f"{lost} of the {len(y)} examples left out scored highest as one of the model's own classes")
    known = guessed >= 0
    confusion = confusion_matrix(y[known], guessed[known], len(taught)).tolist() if len(y) else []
    accuracy = float(np.mean(guessed == y)) if len(y) else None
    examples = sum(len(klass_examples) for k in taught for klass_examples in head.new_classes_[k].examples)
    return KeptEvaluation(names, per_class, accuracy, confusion, examples, notes, kept=kept_report(head, layer))
