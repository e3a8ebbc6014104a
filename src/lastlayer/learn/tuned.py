"""A softmax head whose L2 strength is chosen on the training data: full-batch L-BFGS + k-fold CV.

:class:`TunedSoftmaxRegression` minimises the same objective as
:class:`~lastlayer.learn.softmax.SoftmaxRegression` (mean softmax cross-entropy +
``0.5 * reg * ||W||^2``, bias not penalised), but exactly, with full-batch L-BFGS
(:func:`lastlayer.learn.optimize.lbfgs`, NumPy only) on the whole training set, and picks ``reg``
itself: for each ``reg`` of a grid, from strong to weak, it fits every stratified fold
(warm-started from the fold's previous ``reg``), scores the held-out fold, and stops walking the
grid once the score has not improved for ``patience`` grid points. It then refits on all examples
with the best ``reg``. This is what scikit-learn's ``LogisticRegressionCV``
does (``reg = 1 / (C * n_samples)``); no photos are held out of the final fit.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from lastlayer.errors import TrainingError
from lastlayer.learn.base import FitReport, Log, Params
from lastlayer.learn.linear import LinearSoftmaxHead, balanced_sample_weights, check_class_weight
from lastlayer.learn.losses import cross_entropy
from lastlayer.learn.optimize import lbfgs
from lastlayer.learn.threads import blas_threads
from lastlayer.learn.validation import check_features, check_fitted, check_labels

# Half-decade steps covering the regularisation scikit-learn's LogisticRegressionCV chose on the
# shared datasets and the four sets (C from 0.05 to 170 at 300-1,700 photos: reg 2e-6 to 7e-2).
DEFAULT_REGS = tuple(float(r) for r in np.logspace(0, -6, 13))
SCORINGS = ("log_loss", "accuracy")


def _objective(theta: np.ndarray, X: np.ndarray, y: np.ndarray, weights: np.ndarray | None, reg: float,
               shape: tuple[int, int]) -> tuple[float, np.ndarray]:
    """Loss and flat gradient of ``theta = [W.ravel(), b]``; products in X's dtype, sums in float64."""
    dim, classes = shape
    W = theta[: dim * classes].reshape(dim, classes)
    b = theta[dim * classes:]
    logits = (X @ W.astype(X.dtype, copy=False)).astype(np.float64) + b
    loss, d_logits = cross_entropy(logits, y, weights)
    grad_W = (X.T @ d_logits.astype(X.dtype, copy=False)).astype(np.float64) + reg * W
    return loss + 0.5 * reg * float(np.sum(W * W)), np.concatenate([grad_W.ravel(), d_logits.sum(axis=0)])


def fit_lbfgs(X: np.ndarray, y: np.ndarray, num_classes: int, reg: float, *, start: np.ndarray | None = None,
              sample_weight: np.ndarray | None = None, max_iter: int = 500, tol: float = 1e-4) -> tuple[np.ndarray, int]:
    """Minimise mean cross-entropy + ``0.5 * reg * ||W||^2`` with L-BFGS; returns ``(theta, iterations)``.

    ``theta`` is ``[W.ravel(), b]`` (``W`` ``[D, C]``), float64; ``start`` warm-starts it (default zeros).
    Stops when the largest gradient entry is below ``tol`` (scikit-learn's criterion) or after ``max_iter``.
    """
    shape = (X.shape[1], int(num_classes))
    theta = np.zeros(shape[0] * shape[1] + shape[1]) if start is None else start
    result = lbfgs(lambda t: _objective(t, X, y, sample_weight, float(reg), shape), theta, max_iter=max_iter, tol=tol)
    return result.x, result.n_iter


def row_space(X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``(Z, Q)`` with ``X = Z Q^T`` and orthonormal ``Q`` ``[D, n]`` when there are fewer rows than features.

    An L2-regularised linear model's weights lie in the span of its training rows, so fitting
    ``V`` on ``Z`` (``n`` features) and using ``W = Q V`` gives exactly the fit on ``X`` (same loss,
    same ``||W|| = ||V||``) at ``n / D`` of the cost. With ``n >= D``: ``(X, None)``.
    """
    if len(X) >= X.shape[1]:
        return X, None
    Q, R = np.linalg.qr(X.T.astype(np.float64))
    return R.T, Q


def stratified_folds(y: np.ndarray, folds: int, seed: int | None) -> list[np.ndarray]:
    """Split the indices of ``y`` into ``folds`` held-out parts, each class spread evenly (shuffled with ``seed``)."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(folds)]
    offset = 0
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        for i, index in enumerate(members):
            parts[(offset + i) % folds].append(int(index))
        offset += len(members)
    return [np.sort(np.array(part, dtype=np.int64)) for part in parts]


class TunedSoftmaxRegression(Params, LinearSoftmaxHead):
    """Multinomial logistic regression with the L2 strength chosen by stratified k-fold cross-validation.

    Args:
        regs: the L2 strengths to try (walked from the largest down); default :data:`DEFAULT_REGS`.
        cv: number of folds (lowered to the smallest class's count; below 2 no search is made and
            ``fallback_reg`` is used).
        scoring: ``"log_loss"`` (held-out cross-entropy, smooth; default) or ``"accuracy"``
            (ties go to the stronger ``reg``, as in scikit-learn).
        patience: stop the walk when this many ``reg`` in a row did not improve the best score.
        max_iter, tol: L-BFGS limits per fit (``tol``: largest gradient entry).
        class_weight: ``None`` or ``"balanced"``.
        fallback_reg: ``reg`` when there are too few examples per class to cross-validate;
            ``None`` means ``1 / n_samples`` (scikit-learn's default ``C = 1``).
        num_classes: number of classes (default: largest label + 1).
        seed: shuffles the folds.

    Learned attributes: ``W_`` ``[D, C]`` float32, ``b_``, ``reg_`` (chosen), ``cv_scores_``
    (``{reg: mean held-out score}`` for the regs walked), ``cv_accuracy_`` (mean held-out
    accuracy at ``reg_``, ``None`` without search), ``n_iter_`` (L-BFGS iterations of the final
    fit), ``n_fits_``, ``logit_range_``, ``n_features_in_``, ``num_classes_``.
    """

    def __init__(self, *, regs: Sequence[float] | None = None, cv: int = 5, scoring: str = "log_loss", patience: int = 2,
                 max_iter: int = 500, tol: float = 1e-4, class_weight: str | None = None, fallback_reg: float | None = None,
                 num_classes: int | None = None, seed: int | None = 0) -> None:
        self.regs = regs
        self.cv = cv
        self.scoring = scoring
        self.patience = patience
        self.max_iter = max_iter
        self.tol = tol
        self.class_weight = class_weight
        self.fallback_reg = fallback_reg
        self.num_classes = num_classes
        self.seed = seed
        self.W_: np.ndarray | None = None

    def _check_params(self) -> list[float]:
        if self.scoring not in SCORINGS:
            raise TrainingError(f"scoring must be one of {', '.join(SCORINGS)}, got {self.scoring!r}")
        check_class_weight(self.class_weight)
        regs = sorted((float(r) for r in (DEFAULT_REGS if self.regs is None else self.regs)), reverse=True)
        if not regs or min(regs) < 0 or not all(np.isfinite(regs)):
            raise TrainingError(f"regs must be finite non-negative numbers, got {self.regs!r}")
        if int(self.cv) < 1 or int(self.patience) < 1 or int(self.max_iter) < 1 or not float(self.tol) > 0:
            raise TrainingError("cv, patience and max_iter must be >= 1 and tol > 0")
        return regs

    def _weights(self, y: np.ndarray) -> np.ndarray | None:
        return balanced_sample_weights(y, self.num_classes_, self.class_weight, np.float64)

    # ----------------------------------------------------------------- training
    def fit(self, X: np.ndarray, y: np.ndarray, X_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
            *, log: Log | None = None) -> TunedSoftmaxRegression:
        """Choose ``reg`` by cross-validation on ``(X, y)``, then fit on all of it (starts over).

        ``X_val``/``y_val`` take no part in the choice or the fit; they only widen ``logit_range_``
        (as in :class:`~lastlayer.learn.softmax.SoftmaxRegression`).
        """
        regs = self._check_params()
        X = check_features(X, None, "training embeddings")
        y = check_labels(y, len(X), self.num_classes, "training labels")
        if len(np.unique(y)) < 2:
            raise TrainingError("training needs at least 2 classes with examples; add images of another class")
        self.n_features_in_ = X.shape[1]
        self.num_classes_ = int(self.num_classes) if self.num_classes is not None else int(y.max()) + 1
        say = log or (lambda line: None)
        extra = None if X_val is None or len(np.atleast_2d(X_val)) == 0 else check_features(X_val, self.n_features_in_, "validation embeddings")
        with blas_threads(len(X) * X.shape[1] * self.num_classes_):
            Z, Q = row_space(X)
            start = self._search(Z, y, regs, say)
            theta, self.n_iter_ = fit_lbfgs(Z, y, self.num_classes_, self.reg_, start=start, sample_weight=self._weights(y),
                                            max_iter=int(self.max_iter), tol=float(self.tol))
            self.n_fits_ += 1
            dim, classes = Z.shape[1], self.num_classes_
            V = theta[: dim * classes].reshape(dim, classes)
            self.W_ = (V if Q is None else Q @ V).astype(np.float32)
            self.b_ = theta[dim * classes:].astype(np.float32)
            self.finish_fit(X, extra)
        say(f"chose L2 strength {self.reg_:.3g} from {len(self.cv_scores_)} value(s); {self.n_iter_} L-BFGS iterations on all "
            f"{len(X)} examples")
        return self

    def fit_report(self) -> FitReport:
        """L-BFGS iterations of the final fit, the chosen L2 strength and its cross-validated accuracy."""
        check_fitted(self, "W_")
        return FitReport(iterations=int(self.n_iter_), reg=float(self.reg_), cv_accuracy=self.cv_accuracy_)

    def _search(self, X: np.ndarray, y: np.ndarray, regs: list[float], say: Log) -> np.ndarray | None:
        """Walk ``regs`` over the folds; sets ``reg_``, ``cv_scores_``, ``cv_accuracy_``, ``n_fits_``; returns a warm start."""
        counts = np.bincount(y, minlength=self.num_classes_)
        folds = min(int(self.cv), int(counts[counts > 0].min()))
        self.cv_scores_: dict[float, float] = {}
        self.cv_accuracy_: float | None = None
        self.n_fits_ = 0
        if folds < 2 or len(regs) == 1:
            self.reg_ = regs[0] if len(regs) == 1 else (1.0 / len(X) if self.fallback_reg is None else float(self.fallback_reg))
            if folds < 2:
                say(f"too few examples per class to cross-validate; L2 strength {self.reg_:.3g}")
            return None
        parts = stratified_folds(y, folds, self.seed)
        splits = [(np.setdiff1d(np.arange(len(y)), held), held) for held in parts]
        starts: list[np.ndarray | None] = [None] * folds
        best: tuple[float, float, float, list[np.ndarray | None]] = (-np.inf, regs[0], 0.0, starts)
        stale = 0
        for reg in regs:
            scores, hits, thetas = [], [], []
            for (train, held), theta0 in zip(splits, starts):
                theta, _ = fit_lbfgs(X[train], y[train], self.num_classes_, reg, start=theta0, sample_weight=self._weights(y[train]),
                                     max_iter=int(self.max_iter), tol=float(self.tol))
                self.n_fits_ += 1
                thetas.append(theta)
                dim, classes = X.shape[1], self.num_classes_
                logits = X[held] @ theta[: dim * classes].reshape(dim, classes).astype(X.dtype) + theta[dim * classes:]
                hits.append(float(np.mean(np.argmax(logits, axis=1) == y[held])))
                scores.append(hits[-1] if self.scoring == "accuracy" else -cross_entropy(logits.astype(np.float64), y[held])[0])
            starts = thetas
            score = float(np.mean(scores))
            self.cv_scores_[reg] = score if self.scoring == "accuracy" else -score
            if score > best[0] + 1e-12:
                best, stale = (score, reg, float(np.mean(hits)), thetas), 0
            else:
                stale += 1
                if stale >= int(self.patience):
                    break
        self.reg_, self.cv_accuracy_ = best[1], best[2]
        return np.mean(best[3], axis=0)

