"""Softmax-head speed: BLAS threads, PyCoral's cases, optimisers against scikit-learn at equal accuracy.

1. BLAS threads: ``SoftmaxRegression.fit`` with the thread count :mod:`lastlayer.learn.threads`
   chooses against the BLAS default (the limit switched off), on PyCoral's four cases
   ((classes, feature_dim) in {4, 16} x {256, 1024}, 1024 train + 256 val random float32 samples,
   500 iterations, lr 0.01, batch 100, through ``lastlayer.pycoral``'s ``train_with_sgd``; goal
   < 0.2 s each) and on larger sizes. 5 repeats: min / median / max, and the speed-up.
2. Real embeddings (MobileNet v1 extractor) of flowers (3 splits, 25 % held out) and clothing
   (its train/test), every library under one BLAS thread: scikit-learn ``LogisticRegression(C=1)``
   sets the held-out accuracy; full-batch L-BFGS (:func:`lastlayer.learn.tuned.fit_lbfgs`, the
   same objective) and mini-batch SGD (``train`` defaults, continued until it reaches that
   accuracy, at most 5,000 iterations) are timed to it. Then ``TunedSoftmaxRegression`` against
   ``LogisticRegressionCV``: accuracy and time.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from _common import SHARED

from lastlayer import Interpreter, resolve_model
from lastlayer.embeddings.cache import embed_dataset
from lastlayer.files.datasets import load_dataset, stratified_split
from lastlayer.learn import threads
from lastlayer.learn.softmax import SoftmaxRegression
from lastlayer.learn.tuned import TunedSoftmaxRegression, fit_lbfgs
from lastlayer.model.zoo import DEFAULT_EXTRACTOR
from lastlayer.pycoral.learn.backprop import softmax_regression as pycoral_softmax

warnings.simplefilter("ignore")
REPEATS = 5


def spread(values: list[float]) -> str:
    return f"{min(values):.3f} / {np.median(values):.3f} / {max(values):.3f} s"


def timed_runs(run, repeats: int = REPEATS) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        out.append(time.perf_counter() - start)
    return out


def with_default_threads(run):
    """Run with the library's thread limit switched off (the BLAS default thread count)."""
    saved = threads.MULTITHREAD_MIN_WORK
    threads.MULTITHREAD_MIN_WORK = 0.0
    try:
        return run()
    finally:
        threads.MULTITHREAD_MIN_WORK = saved


def thread_cases() -> None:
    print("1. BLAS threads: chosen by lastlayer vs the BLAS default; min / median / max of 5 runs")
    rng = np.random.default_rng(12345)
    for classes, dim in [(4, 256), (16, 256), (4, 1024), (16, 1024)]:
        labels = rng.permutation(np.tile(np.arange(classes), 1280 // classes + 1)[:1280])
        features = rng.random((1280, dim), dtype=np.float32)
        data = {"data_train": features[:1024], "labels_train": labels[:1024], "data_val": features[1024:], "labels_val": labels[1024:]}

        def run(classes=classes, dim=dim, data=data):
            pycoral_softmax.SoftmaxRegression(dim, classes, seed=0).train_with_sgd(data, 500, 0.01, 100, print_every=-1)

        chosen, default = timed_runs(run), with_default_threads(lambda run=run: timed_runs(run))
        verdict = "ok" if np.median(chosen) < 0.2 else "MISSES"
        print(f"  PyCoral {classes:2d} classes x {dim:4d}-d x 1024: {spread(chosen)}  default threads {spread(default)}  "
              f"speed-up x{np.median(default) / np.median(chosen):.1f}  (goal < 0.2 s: {verdict})")
    for n, dim, classes, repeats in [(10_000, 1024, 100, 3), (30_000, 1024, 100, 1)]:
        X = rng.random((n, dim), dtype=np.float32)
        y = rng.integers(0, classes, n)

        def run(X=X, y=y):
            SoftmaxRegression(num_iter=100, batch_size=1000, seed=0).fit(X, y)

        chosen, default = timed_runs(run, repeats), with_default_threads(lambda run=run, r=repeats: timed_runs(run, r))
        print(f"  SGD {n} x {dim}-d x {classes} classes, 100 batches of 1000: {spread(chosen)}  default {spread(default)}  "
              f"speed-up x{np.median(default) / np.median(chosen):.1f}")


def real_embeddings() -> None:
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from threadpoolctl import threadpool_limits

    interpreter = Interpreter(resolve_model(DEFAULT_EXTRACTOR))

    def embed(path):
        return embed_dataset(interpreter, load_dataset(path), progress=False)

    flowers = embed(SHARED / "datasets" / "flowers")
    splits = {}
    for seed in range(3):
        train, test = stratified_split(flowers.y, 0.25, seed)
        splits[f"flowers seed {seed}"] = (flowers.X[train], flowers.y[train], flowers.X[test], flowers.y[test])
    clothing_train, clothing_test = embed(SHARED / "datasets" / "clothing" / "train"), embed(SHARED / "datasets" / "clothing" / "test")
    splits["clothing train/test"] = (clothing_train.X, clothing_train.y, clothing_test.X, clothing_test.y)

    print("\n2. real embeddings, one BLAS thread for every library; held-out accuracy (fit time)")
    ratios: dict[str, list[float]] = {"L-BFGS / sklearn LR": [], "SGD / sklearn LR": [], "tuned / LR-CV": []}
    with threadpool_limits(1, user_api="blas"):
        for name, (X, y, Xt, yt) in splits.items():
            classes = int(y.max()) + 1
            start = time.perf_counter()
            target = LogisticRegression(C=1.0, max_iter=3000).fit(X, y).score(Xt, yt)
            t_sklearn = time.perf_counter() - start

            start = time.perf_counter()
            theta, iterations = fit_lbfgs(X, y, classes, 1.0 / len(X))
            t_lbfgs = time.perf_counter() - start
            W, b = theta[: X.shape[1] * classes].reshape(X.shape[1], classes), theta[X.shape[1] * classes:]
            acc_lbfgs = float(np.mean(np.argmax(Xt @ W + b, axis=1) == yt))

            start = time.perf_counter()
            sgd = SoftmaxRegression(momentum=0.9, seed=0).fit(X, y)
            acc_default = sgd.score(Xt, yt)
            while sgd.score(Xt, yt) < target - 1e-9 and sgd.n_iter_ < 5000:
                sgd.partial_fit(X, y, num_iter=100)
            t_sgd = time.perf_counter() - start
            reached = "reached" if sgd.score(Xt, yt) >= target - 1e-9 else "not reached"
            print(f"  {name:20} sklearn LR(C=1) {target:.3f} ({t_sklearn:.2f} s) | L-BFGS same objective {acc_lbfgs:.3f} "
                  f"({t_lbfgs:.2f} s, {iterations} it) | SGD {acc_default:.3f} at 500 it, {reached} at {sgd.n_iter_} it ({t_sgd:.2f} s)")
            ratios["L-BFGS / sklearn LR"].append(t_lbfgs / t_sklearn)
            ratios["SGD / sklearn LR"].append(t_sgd / t_sklearn)

            start = time.perf_counter()
            cv = LogisticRegressionCV(max_iter=1000).fit(X, y)
            t_cv = time.perf_counter() - start
            start = time.perf_counter()
            tuned = TunedSoftmaxRegression().fit(X, y)
            t_tuned = time.perf_counter() - start
            print(f"  {'':20} LogisticRegressionCV {cv.score(Xt, yt):.3f} ({t_cv:.2f} s, C {cv.C_[0]:.3g}) | "
                  f"TunedSoftmaxRegression {tuned.score(Xt, yt):.3f} ({t_tuned:.2f} s, reg {tuned.reg_:.3g}, {tuned.n_fits_} fits)")
            ratios["tuned / LR-CV"].append(t_tuned / t_cv)
    for key, values in ratios.items():
        print(f"  time {key}: min {min(values):.2f} / median {np.median(values):.2f} / max {max(values):.2f}")


if __name__ == "__main__":
    thread_cases()
    real_embeddings()
