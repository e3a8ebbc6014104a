"""The learner contract: parameters derived from ``__init__``, the protocols, the fit report and the solver registry."""

from __future__ import annotations

import numpy as np
import pytest

from lastlayer.errors import TrainingError
from lastlayer.learn.base import FitReport, Learner, Params, SoftmaxLearner
from lastlayer.learn.registry import SOLVERS, Solver, get_solver, solver_names
from lastlayer.learn.softmax import SoftmaxRegression
from lastlayer.learn.tuned import TunedSoftmaxRegression


def blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, (3, 8))
    y = np.repeat(np.arange(3), 20)
    return (centers[y] + rng.normal(size=(60, 8))).astype(np.float32), y


@pytest.mark.parametrize("cls", [SoftmaxRegression, TunedSoftmaxRegression])
def test_parameters_are_the_init_signature(cls):
    import inspect

    learner = cls()
    names = [name for name in inspect.signature(cls.__init__).parameters if name != "self"]
    assert list(learner.get_params()) == names == cls.param_names()
    assert cls(**learner.get_params()).get_params() == learner.get_params()


def test_set_params_changes_the_next_fit_and_refuses_unknown_names():
    X, y = blobs()
    model = SoftmaxRegression(num_iter=5, seed=0)
    assert model.set_params(num_iter=40, momentum=0.9) is model and model.get_params()["num_iter"] == 40
    assert model.fit(X, y).n_iter_ == 40
    with pytest.raises(TrainingError, match="has no parameter 'lr'; its parameters are learning_rate, num_iter"):
        model.set_params(lr=0.1)


def test_repr_shows_the_parameters_that_differ_from_their_defaults():
    assert repr(SoftmaxRegression()) == "SoftmaxRegression()"
    assert repr(SoftmaxRegression(momentum=0.9, seed=3)) == "SoftmaxRegression(momentum=0.9, seed=3)"
    assert repr(TunedSoftmaxRegression(regs=[0.1, 0.01], cv=3)) == "TunedSoftmaxRegression(regs=[0.1, 0.01], cv=3)"


def test_a_learner_must_name_its_parameters():
    class Loose(Params):
        def __init__(self, **options):
            self.options = options

    with pytest.raises(TypeError, match=r"\*\*kwargs"):
        Loose().get_params()


def test_both_learners_keep_the_contract_and_report_their_fit():
    X, y = blobs()
    sgd = SoftmaxRegression(num_iter=3000, momentum=0.9, early_stopping=True, seed=0).fit(X[::2], y[::2], X[1::2], y[1::2])
    tuned = TunedSoftmaxRegression(cv=3).fit(X, y)
    for learner in (sgd, tuned):
        assert isinstance(learner, Learner) and isinstance(learner, SoftmaxLearner)
    assert sgd.fit_report() == FitReport(iterations=sgd.n_iter_, stopped_early=True, reg=0.0) and sgd.n_iter_ < 3000
    assert tuned.fit_report() == FitReport(iterations=tuned.n_iter_, reg=tuned.reg_, cv_accuracy=tuned.cv_accuracy_)
    assert tuned.fit_report().to_dict()["cv_accuracy"] == tuned.cv_accuracy_ > 0.5


def test_print_every_is_a_parameter_and_a_fit_keyword():
    X, y = blobs()
    lines: list[str] = []
    SoftmaxRegression(num_iter=30, print_every=10, seed=0).fit(X, y, log=lines.append)
    assert len(lines) == 3 and lines[0].startswith("Loss: ")
    lines.clear()
    SoftmaxRegression(num_iter=30, print_every=10, seed=0).fit(X, y, print_every=0, log=lines.append)
    assert lines == []


def test_the_registry_names_the_solvers_and_builds_them_from_the_settings_they_take():
    assert solver_names() == ("tuned", "sgd") and get_solver("tuned").refit_on_all_photos
    sgd = get_solver("sgd").make(num_iter=7, momentum=0.5, regs=[1.0], print_every=3)
    assert isinstance(sgd, SoftmaxRegression) and (sgd.num_iter, sgd.momentum, sgd.print_every) == (7, 0.5, 3)
    tuned = get_solver("tuned").make(num_iter=7, momentum=0.5, seed=4, class_weight="balanced")
    assert isinstance(tuned, TunedSoftmaxRegression) and (tuned.seed, tuned.class_weight) == (4, "balanced")
    with pytest.raises(TrainingError, match="solver must be one of 'tuned', 'sgd', got 'adam'") as caught:
        get_solver("adam")
    assert caught.value.subject == "solver"
    with pytest.raises(ValueError, match="already registered"):
        from lastlayer.learn.registry import register_solver

        register_solver(Solver("sgd", "x:Y", "again"))
    assert SOLVERS["sgd"].target == "lastlayer.learn.softmax:SoftmaxRegression"


def test_class_weights_are_one_rule_for_both_learners():
    from lastlayer.learn.linear import balanced_sample_weights

    y = np.array([0, 0, 0, 1])
    np.testing.assert_allclose(balanced_sample_weights(y, 3, "balanced"), [4 / 9, 4 / 9, 4 / 9, 4 / 3], rtol=1e-6)  # n / (C * count)
    assert balanced_sample_weights(y, 3, None) is None
    for cls in (SoftmaxRegression, TunedSoftmaxRegression):
        with pytest.raises(TrainingError, match="class_weight must be None or 'balanced'"):
            cls(class_weight="even").fit(*blobs())
