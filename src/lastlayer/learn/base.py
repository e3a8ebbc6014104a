"""The learner contract: what a last-layer learner is, and the parameter handling every learner shares.

A learner follows scikit-learn's estimator conventions:

- ``__init__`` takes keyword parameters and only stores each under its own name (no checks, no
  work). :class:`Params` derives ``get_params`` / ``set_params`` / ``repr`` from that signature,
  so a parameter is written once.
- ``fit(X, y)`` starts over on float embeddings ``X`` ``[n, D]`` and class ids ``y`` ``[n]`` and
  returns the learner; learned attributes end in ``_`` (``W_``, ``n_iter_`` ...). Parameters are
  checked in ``fit``; wrong input raises :class:`~lastlayer.errors.TrainingError` with a one-line fix.
- ``predict_proba(X)`` gives float probabilities ``[n, C]``.
- ``export()`` hands the trained head to the model writers as a :class:`~lastlayer.layer.DenseLayer`
  (plain arrays): a learner knows no file format, the model writers know no learning.
- ``fit_report()`` says what the last fit did (:class:`FitReport`), for reports and logs.

That is :class:`Learner`. A learner that ``lastlayer train --solver NAME`` can run is a
:class:`SoftmaxLearner`: its ``fit`` also takes held-out embeddings (``X_val``, ``y_val``; used
for early stopping or ignored) and a ``log`` for progress lines, and it computes the scores its
saved model will give (``saved_scores``). Add one by writing a module in ``lastlayer/learn/`` (a
class on :class:`Params` and :class:`~lastlayer.learn.linear.LinearSoftmaxHead`, which gives
inference, saved scores and export for ``W_`` / ``b_``) and one line in
:mod:`lastlayer.learn.registry`; the train job passes it every setting it offers whose name is
one of the class's ``__init__`` parameters.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, TypeVar, runtime_checkable

from lastlayer.errors import TrainingError

if TYPE_CHECKING:
    import numpy as np

    from lastlayer.layer import DenseLayer

Log = Callable[[str], None]
P = TypeVar("P", bound="Params")


@dataclass(frozen=True)
class FitReport:
    """What a learner's last ``fit`` did.

    Attributes:
        iterations: optimisation steps of the fit that made the head (SGD steps, L-BFGS iterations, ...).
        stopped_early: the fit stopped before its iteration budget (early stopping).
        reg: the L2 strength of the head (given, or chosen by the learner); ``None`` when it has none.
        cv_accuracy: mean held-out accuracy of the learner's own cross-validation, if it made one.
    """

    iterations: int
    stopped_early: bool = False
    reg: float | None = None
    cv_accuracy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Params:
    """``get_params`` / ``set_params`` / ``repr`` derived from ``__init__``'s keyword parameters (scikit-learn's way).

    A subclass's ``__init__`` stores each parameter as an attribute of the same name and nothing else
    (learned state is created by ``fit``), so parameters are never listed by hand.
    """

    @classmethod
    def param_names(cls) -> list[str]:
        """The names of ``__init__``'s parameters, in order (``*args`` / ``**kwargs`` are not allowed)."""
        names = []
        for parameter in inspect.signature(cls.__init__).parameters.values():
            if parameter.name == "self":
                continue
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                raise TypeError(f"{cls.__name__}.__init__ takes *args or **kwargs; a learner names every parameter")
            names.append(parameter.name)
        return names

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters and their current values (``deep`` is accepted for scikit-learn's tools)."""
        return {name: getattr(self, name) for name in self.param_names()}

    def set_params(self: P, **params: Any) -> P:
        """Change constructor parameters; they take effect at the next ``fit``."""
        valid = self.param_names()
        for name, value in params.items():
            if name not in valid:
                raise TrainingError(f"{type(self).__name__} has no parameter {name!r}; its parameters are {', '.join(valid)}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()}
        shown = []
        for name, value in self.get_params().items():
            default = defaults.get(name, inspect.Parameter.empty)
            try:
                same = default is not inspect.Parameter.empty and bool(value == default)
            except (TypeError, ValueError):  # arrays and other values without a truth value
                same = False
            if not same:
                shown.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"


@runtime_checkable
class Learner(Protocol):
    """What every last-layer learner provides (see the module docstring)."""

    def get_params(self, deep: bool = True) -> dict[str, Any]: ...

    def set_params(self, **params: Any) -> Learner: ...

    def fit(self, X: np.ndarray, y: np.ndarray) -> Learner: ...

    def predict_proba(self, X: np.ndarray) -> np.ndarray: ...

    def export(self) -> DenseLayer: ...

    def fit_report(self) -> FitReport: ...


@runtime_checkable
class SoftmaxLearner(Learner, Protocol):
    """A learner the train job runs by name (:mod:`lastlayer.learn.registry`): a dense + softmax head."""

    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None, y_val: np.ndarray | None = None, *,
            log: Log | None = None) -> SoftmaxLearner: ...

    def score(self, X: np.ndarray, y: np.ndarray) -> float: ...

    def saved_scores(self, X: np.ndarray, output_type: str = "uint8") -> np.ndarray: ...

    def export(self, labels: Sequence[str] | None = None) -> DenseLayer: ...
