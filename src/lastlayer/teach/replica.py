"""What one process knows of a teaching state: the store's classes and examples as one ImprintingHead, kept current.

The store is the one source of truth, changed by any number of processes; a :class:`Replica` follows it.
A refresh costs one read of the revision number when nothing changed, and otherwise reads only what it
lacks: examples newer than the newest it holds (ids only grow), all example ids only when the count
says some were removed, the classes table, and the fine-tuned rows only when they changed. Examples
added to or removed from classes already in the head go to :meth:`ImprintingHead.add` /
:meth:`ImprintingHead.remove_example`; anything else (a class joining or leaving the head, new
fine-tuned rows) rebuilds the head from the store with :meth:`ImprintingHead.from_examples`.

A state that keeps its model's own classes (:mod:`lastlayer.teach.kept`) is one
:class:`~lastlayer.learn.keep.KeepClassesHead` instead: the model's classes (ids ``0 .. C-1``), then the
state's. Examples added go to :meth:`KeepClassesHead.add`, and so do a new class's first examples (it joins
after the others); a removal rebuilds the head (from the examples' stored embeddings, over the model's class
layer read once; ``benchmarks/teach_kept.py`` measures what it costs).

The head is used and changed only under a short lock (no disk, no inference, no fine-tune inside it),
so predictions never wait for the disk, another process, or a long fine-tune.

The replica also keeps the head's unknown rule (:class:`~lastlayer.learn.unknown.UnknownRule`, fitted on
the stored embeddings, see :class:`RuleKeeper`) current with every change, whichever process made it.
"""

from __future__ import annotations

import copy
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, TypeVar, Union

import numpy as np

from lastlayer.layer import AppendedClasses, DenseLayer
from lastlayer.learn.imprinting import ImprintingHead
from lastlayer.learn.keep import KeepClassesHead
from lastlayer.learn.unknown import TooFewExamplesError, UnknownRule
from lastlayer.teach.kept import ModelClasses, Setting, copied, kept_head
from lastlayer.teach.store import Snapshot, StateError, StateStore, StoredClass

REFRESH_INTERVAL = 0.1  # seconds between two looks at the store's revision from predictions
# Examples added are folded into the unknown rule at once (partial_fit, ~0.3 ms); the rule is derived
# afresh from every example (~18 ms at 500 examples) once no example was added for this long, so a
# burst of frames costs one full fit, and the earlier examples' left-out similarities catch up.
RULE_SETTLE = 1.0
T = TypeVar("T")
Head = Union[ImprintingHead, KeepClassesHead]


@dataclass(frozen=True)
class Scores:
    """A prediction over the head: its classes' store ids, labels and probabilities, at one revision, and what the
    unknown rule says (``unknown`` None: no rule, e.g. too few examples or turned off)."""

    revision: int
    class_ids: list[int]
    labels: list[str]
    probabilities: np.ndarray
    unknown: bool | None = None
    similarity: float | None = None


class RuleKeeper:
    """The unknown rule of a replica's head: refitted when examples leave, folded in when they come, exact once settled.

    Args:
        enabled: whether predictions apply a rule at all.
        threshold: an override of the derived threshold (``None``: derived).
        settle: seconds without additions after which a rule grown by :meth:`added` is derived afresh.
    """

    def __init__(self, enabled: bool = True, threshold: float | None = None, settle: float = RULE_SETTLE) -> None:
        self.enabled, self.threshold, self.settle = enabled, threshold, settle
        self.rule: UnknownRule | None = None
        self.note: str | None = "no examples yet"
        self.fits = self.partial_fits = 0  # how often the rule was derived afresh / grown (for tests and benchmarks)
        self.exact = True  # derived afresh from every example (not grown since)
        self.generation = -1  # the head (its classes, in order) the rule is for
        self._due = 0.0

    def refit(self, examples: list[np.ndarray], generation: int) -> None:
        """Derive the rule afresh from the examples of each head class (``[n_i, D]`` unit embeddings, in head order)."""
        self.exact, self.fits, self.generation = True, self.fits + 1, generation
        if not self.enabled:
            self.rule, self.note = None, "turned off"
            return
        sizes = [len(units) for units in examples]
        try:
            if not sum(sizes):
                raise TooFewExamplesError("no examples yet")
            X = np.concatenate([units for units in examples if len(units)])
            y = np.repeat(np.arange(len(examples)), sizes)
            self.rule, self.note = UnknownRule.fit(X, y, num_classes=len(examples)), None
        except TooFewExamplesError as exc:
            self.rule, self.note = None, str(exc)

    def added(self, units: np.ndarray, classes: np.ndarray, examples: Callable[[], list[np.ndarray]], generation: int) -> None:
        """Fold examples just added to head classes ``classes`` into the rule (``examples()``: all, for a refit)."""
        if not self.enabled:
            return
        if self.rule is None or generation != self.generation:  # too few before (a fit is cheap then), or another head
            self.refit(examples(), generation)
            return
        self.rule = self.rule.partial_fit(units, classes)
        self.partial_fits += 1
        self.exact, self._due = False, time.monotonic() + self.settle

    def due(self) -> bool:
        """Whether a rule grown by :meth:`added` should now be derived afresh."""
        return not self.exact and time.monotonic() >= self._due

    def judge(self, unit: np.ndarray, probabilities: np.ndarray, generation: int) -> tuple[bool | None, float | None]:
        """``(unknown, similarity)`` of one unit embedding that head ``generation`` scored ``probabilities``."""
        rule = self.rule
        if rule is None or generation != self.generation or rule.num_classes != len(probabilities) or rule.dim != len(unit):
            return None, None
        X = unit[np.newaxis]
        accepted = rule.accepts(X, self.threshold, predicted=np.array([int(np.argmax(probabilities))]))[0]
        return not bool(accepted), float(rule.similarity(X)[0])

    def exported(self) -> UnknownRule | None:
        """The rule to store with an exported model (the override threshold, if any, with it)."""
        rule = self.rule
        if rule is None or self.threshold is None:
            return rule
        return rule.with_threshold(self.threshold)


class Replica:
    """The store's state as an :class:`ImprintingHead` over the classes with examples (or imported rows).

    Args:
        store: the state followed.
        dim: the embedding size.
        scale: the head's ``s``.
        interval: the least time between two looks at the store from :meth:`refresh` without ``force``.
        model_classes: the model's own classes, for a state that keeps them.
        rule: the keeper of the head's unknown rule (default: a :class:`RuleKeeper` with the derived threshold; not
            applied to a head that keeps the model's own classes).
    """

    def __init__(self, store: StateStore, dim: int, scale: float, interval: float = REFRESH_INTERVAL,
                 model_classes: ModelClasses | None = None, rule: RuleKeeper | None = None) -> None:
        self.store, self.dim, self.scale, self.interval = store, dim, scale, interval
        self.model_classes = model_classes
        self.rule = rule or RuleKeeper()
        self.keep: Setting | None = None  # the state's keep_classes setting the head was built with
        self._own_ids: list[int] = []  # the model's own classes in the head (kept), before the state's
        self._lock = threading.Lock()  # the head and the tables below: memory only, held briefly
        self._refreshing = threading.Lock()
        self._next_look = 0.0
        self.revision = self.examples_revision = -1
        self._tuned = -1
        self._finetuned: dict[int, np.ndarray] = {}
        self._classes: dict[int, StoredClass] = {}
        self._example_ids: dict[int, list[int]] = {}  # class id -> its example ids, in the head's order
        self._newest = 0
        self._head: Head | None = None
        self._head_ids: list[int] = []
        self._generation = 0  # bumped whenever a new head replaces the old one

    # ----------------------------------------------------------------- following the store
    def refresh(self, force: bool = False) -> bool:
        """Catch up with the store; returns whether anything changed.

        Without ``force`` it looks at most every ``interval`` seconds, and not at all while another
        thread is refreshing (the caller goes on with what is known); with ``force`` (after a change of
        this process) it always looks, waiting for a refresh under way.
        """
        if not force and time.monotonic() < self._next_look:
            return False
        if not self._refreshing.acquire(blocking=force):
            return False
        try:
            if self.rule.due():
                self._refit_rule()
            self._next_look = time.monotonic() + self.interval
            snap = self.store.snapshot(self.revision, after=self._newest, tuned=self._tuned)
            if snap is None:
                return False
            listed_all = snap.example_count != self._known() + len(snap.examples)
            if listed_all:  # some were removed: list them all to see which
                snap = self.store.snapshot(None, after=self._newest, tuned=self._tuned, every_example=True)
            if snap is not None and not self._follow(snap, listed_all):
                self._rebuild(self.store.snapshot(None, tuned=None, every_example=True))
            return True
        finally:
            self._refreshing.release()

    def _known(self) -> int:
        return sum(len(ids) for ids in self._example_ids.values())

    @staticmethod
    def _members(snap: Snapshot, counts: dict[int, int]) -> list[StoredClass]:
        """The classes in the head: those with examples or imported rows, in creation order."""
        return [c for c in snap.classes if c.base_weights is not None or counts.get(c.id)]

    def _follow(self, snap: Snapshot, listed_all: bool) -> bool:
        """Apply ``snap`` to the head in place; ``False`` when it needs a rebuild instead."""
        present = {e.id for e in snap.examples} if listed_all else None
        removed = [] if present is None else [(cid, eid) for cid, ids in self._example_ids.items() for eid in ids if eid not in present]
        added = [e for e in snap.examples if e.id > self._newest]
        counts = {cid: len(ids) for cid, ids in self._example_ids.items()}
        for cid, _ in removed:
            counts[cid] -= 1
        for example in added:
            counts[example.class_id] = counts.get(example.class_id, 0) + 1
        members = [c.id for c in self._members(snap, counts)]
        grouped: dict[int, list[np.ndarray]] = defaultdict(list)
        for example in added:
            grouped[example.class_id].append(example.embedding)
        if members != self._head_ids and not self._joining(members, grouped) or (members and self._head is None) or \
                snap.finetuned is not None or snap.keep_classes != self.keep or (removed and self.keep is not None):
            return False
        offset = len(self._own_ids)
        with self._lock:
            for cid in members[len(self._head_ids):]:  # classes joining a kept head, after the others: in order
                self._head.add(np.stack(grouped.pop(cid)), offset + members.index(cid))  # (named below)
                self._example_ids[cid] = [e.id for e in added if e.class_id == cid]
            self._head_ids = members
            for cid, eid in removed:  # (the head is None only when no class is in it)
                self._head.remove_example(offset + self._head_ids.index(cid), self._example_ids[cid].index(eid))
                self._example_ids[cid].remove(eid)
            for cid, units in grouped.items():
                self._head.add(np.stack(units), offset + self._head_ids.index(cid))
                self._example_ids.setdefault(cid, []).extend(e.id for e in added if e.class_id == cid)
            for klass in snap.classes:
                if klass.id in self._head_ids:
                    self._head.rename(offset + self._head_ids.index(klass.id), klass.name)
            self._classes = {c.id: c for c in snap.classes}
            self._newest = max([self._newest] + [e.id for e in added])
            self.revision, self.examples_revision = snap.revision, snap.examples_revision
        if removed:
            self._refit_rule()
        elif added:
            with self._lock:
                indices, generation = np.array([self._head_ids.index(e.class_id) for e in added]), self._generation
            self.rule.added(np.stack([e.embedding for e in added]), indices, lambda: self._examples()[0], generation)
        return True

    def _joining(self, members: list[int], added: dict[int, list[np.ndarray]]) -> bool:
        """Whether ``members`` are the kept head's classes and, after them, new ones with examples just added (which
        the head takes as its next classes; an imprinting head is rebuilt, see the module docstring)."""
        known = len(self._head_ids)
        return self.keep is not None and members[:known] == self._head_ids and all(cid in added for cid in members[known:])

    def _examples(self) -> tuple[list[np.ndarray], int]:
        """The examples of each head class, in head order, and the head's generation (read under the lock)."""
        with self._lock:
            head = self._head  # (a head keeping the model's own classes has no rule: their examples are not at hand)
            return ([] if head is None or isinstance(head, KeepClassesHead) else [head.examples(i) for i in range(head.num_classes)]), self._generation

    def _refit_rule(self) -> None:
        self.rule.refit(*self._examples())

    def _rebuild(self, snap: Snapshot | None) -> None:
        """A new head from a snapshot holding every example with its embedding."""
        if snap is None:
            return
        finetuned = snap.finetuned if snap.finetuned is not None else self._finetuned
        by_class: dict[int, list[np.ndarray]] = defaultdict(list)
        ids: dict[int, list[int]] = defaultdict(list)
        for example in snap.examples:
            by_class[example.class_id].append(example.embedding)
            ids[example.class_id].append(example.id)
        members = self._members(snap, {cid: len(units) for cid, units in by_class.items()})
        head: Head | None = None
        if snap.keep_classes is not None:
            head = self._kept_head(snap.keep_classes, members, by_class)
        elif members:
            X = np.concatenate([np.stack(by_class[c.id]) if by_class[c.id] else np.zeros((0, self.dim)) for c in members])
            y = np.concatenate([np.full(len(by_class[c.id]), index) for index, c in enumerate(members)])
            head = ImprintingHead.from_examples(
                X, y, [c.name for c in members], scale=self.scale, dim=self.dim,
                base_rows=np.stack([c.base_weights if c.base_weights is not None else np.zeros(self.dim) for c in members]),
                base_shots=[c.base_shots for c in members], trainable=[c.trainable for c in members],
                rows={index: finetuned[c.id] for index, c in enumerate(members) if c.id in finetuned})
        with self._lock:
            self._head, self._head_ids = head, [c.id for c in members]
            self.keep, self._own_ids = snap.keep_classes, list(range(head.base_classes)) if isinstance(head, KeepClassesHead) else []
            self._generation += 1
            self._classes = {c.id: c for c in snap.classes}
            self._example_ids = dict(ids)
            self._newest = max([0] + [e.id for e in snap.examples])
            self._finetuned, self._tuned = finetuned, snap.tuned_revision
            self.revision, self.examples_revision = snap.revision, snap.examples_revision
        self._refit_rule()

    def _kept_head(self, setting: Setting, members: list[StoredClass], by_class: dict[int, list[np.ndarray]]) -> KeepClassesHead:
        if self.model_classes is None:
            raise StateError(f"the state in {self.store.folder} keeps its model's own classes, but no model was given", subject="state")
        return kept_head(self.model_classes, setting, members, by_class)

    # ----------------------------------------------------------------- reading
    def classes(self) -> list[tuple[StoredClass, int]]:
        """Every class, in creation order, with how many examples taught it (imported shots included)."""
        with self._lock:
            return [(c, c.base_shots + len(self._example_ids.get(c.id, ()))) for c in self._classes.values()]

    def find(self, name: str) -> StoredClass | None:
        with self._lock:
            return next((c for c in self._classes.values() if c.name == name), None)

    def scores(self, unit: np.ndarray) -> Scores:
        """The head's probabilities for one unit embedding (none before the first example), and the rule's answer."""
        with self._lock:
            if self._head is None:
                return Scores(self.revision, [], [], np.zeros(0))
            scores = Scores(self.revision, self._own_ids + self._head_ids, self._head.labels, self._head.predict_proba(unit[np.newaxis])[0])
            generation = self._generation
        unknown, similarity = self.rule.judge(unit, scores.probabilities, generation)
        return Scores(scores.revision, scores.class_ids, scores.labels, scores.probabilities, unknown, similarity)

    def exported(self) -> DenseLayer | AppendedClasses | None:
        """The head as a layer to write, carrying its unknown rule (derived afresh first if it was grown since; a head
        keeping the model's own classes has none); ``None`` before the first example of the state's classes."""
        with self._refreshing:  # no refresh changes the head or the rule meanwhile
            if not self.rule.exact:
                self._refit_rule()
            rule = self.rule.exported()
            with self._lock:
                head = self._head
                if head is None or isinstance(head, KeepClassesHead) and head.num_classes == head.base_classes:
                    return None
                layer = head.export()
                fits = rule is not None and self.rule.generation == self._generation
            return rule.attach(layer) if fits else layer

    def with_head(self, use: Callable[[Head | None, list[int]], T]) -> T:
        """``use(head, class ids)`` under the lock: for quick work only (see :meth:`head_copy` for slow work)."""
        with self._lock:
            return use(self._head, list(self._head_ids))

    def head_copy(self) -> tuple[Head | None, list[int], int]:
        """A copy of the head to work on outside the lock, its classes' ids, and the examples revision it holds."""
        with self._lock:
            head = copied(self._head) if isinstance(self._head, KeepClassesHead) else copy.deepcopy(self._head)
            return head, self._own_ids + self._head_ids, self.examples_revision
