"""The learners ``lastlayer train --solver NAME`` can run, by name.

Each entry names a :class:`~lastlayer.learn.base.SoftmaxLearner` class by its import path, so this
module imports nothing heavy (the CLI lists the names without loading NumPy). A new learner is one
module in ``lastlayer/learn/`` plus one :func:`register_solver` line at the end of this file; the
train job builds it with :meth:`Solver.make`, which passes every setting the job offers whose
name is one of the class's ``__init__`` parameters (``num_classes``, ``seed``, ``class_weight``,
``learning_rate``, ``num_iter``, ``batch_size``, ``momentum``, ``reg``, ``early_stopping``,
``print_every``), and fits it with ``fit(X, y, X_val, y_val, log=...)``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lastlayer.errors import TrainingError

if TYPE_CHECKING:
    from lastlayer.learn.base import SoftmaxLearner


@dataclass(frozen=True)
class Solver:
    """A learner the train job can run.

    Attributes:
        name: what ``--solver`` takes.
        target: ``"module:Class"`` of the learner (imported on first use).
        summary: one line for ``--help``.
        refit_on_all_photos: the learner needs no held-out photos (it tunes itself on the training
            photos), so after they measured it the job fits the saved head again on every photo.
    """

    name: str
    target: str
    summary: str
    refit_on_all_photos: bool = False

    def learner_class(self) -> type[SoftmaxLearner]:
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)

    def make(self, **settings: Any) -> SoftmaxLearner:
        """A new, unfitted learner with those of ``settings`` its ``__init__`` takes (the others are not its own)."""
        cls = self.learner_class()
        accepted = set(cls.param_names())  # type: ignore[attr-defined]  (every learner is on learn.base.Params)
        return cls(**{name: value for name, value in settings.items() if name in accepted})


SOLVERS: dict[str, Solver] = {}


def register_solver(solver: Solver) -> Solver:
    """Make ``solver`` available by its name (a name registered twice is an error)."""
    if solver.name in SOLVERS:
        raise ValueError(f"a solver named {solver.name!r} is already registered ({SOLVERS[solver.name].target})")
    SOLVERS[solver.name] = solver
    return solver


def solver_names() -> tuple[str, ...]:
    """The registered names, the default first."""
    return tuple(SOLVERS)


def get_solver(name: str) -> Solver:
    """The solver called ``name``, or a :class:`TrainingError` listing the known ones."""
    try:
        return SOLVERS[name]
    except KeyError:
        known = ", ".join(repr(n) for n in SOLVERS)
        raise TrainingError(f"solver must be one of {known}, got {name!r}", subject="solver") from None


register_solver(Solver("tuned", "lastlayer.learn.tuned:TunedSoftmaxRegression",
                       "L2 strength by cross-validation, L-BFGS (default)", refit_on_all_photos=True))
register_solver(Solver("sgd", "lastlayer.learn.softmax:SoftmaxRegression", "mini-batch SGD"))
