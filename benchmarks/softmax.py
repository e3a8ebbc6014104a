"""SoftmaxRegression speed on PyCoral's benchmark cases, and accuracy against scikit-learn.

1. PyCoral's cases: (classes, feature_dim) in {4, 16} x {256, 1024}, 1024 train + 256 val random
   float32 samples, 500 iterations, lr 0.01, batch 100 (goal: each < 0.2 s), timed through
   lastlayer.pycoral's train_with_sgd as a ported script calls it.
2. Real embeddings (MobileNet v1 extractor) of the shared datasets: lastlayer's `train` settings
   and PyCoral's plain SGD against scikit-learn LogisticRegression on the same split (goal: within
   1 point of sklearn or better). Times are wall-clock fit times in this process.
"""

from __future__ import annotations

import time

import numpy as np
from _common import SHARED

from lastlayer import Interpreter, resolve_model
from lastlayer.data import load_dataset, stratified_split
from lastlayer.embeddings import embed_dataset
from lastlayer.learn.softmax import SoftmaxRegression
from lastlayer.pycoral.learn.backprop import softmax_regression as pycoral_softmax
from lastlayer.zoo import DEFAULT_EXTRACTOR


def pycoral_cases() -> None:
    print("PyCoral cases: 1024 train + 256 val, 500 iterations, lr 0.01, batch 100")
    rng = np.random.default_rng(12345)
    for classes, dim in [(4, 256), (16, 256), (4, 1024), (16, 1024)]:
        labels = rng.permutation(np.tile(np.arange(classes), 1280 // classes + 1)[:1280])
        features = rng.random((1280, dim), dtype=np.float32)
        data = {"data_train": features[:1024], "labels_train": labels[:1024],
                "data_val": features[1024:], "labels_val": labels[1024:]}
        model = pycoral_softmax.SoftmaxRegression(dim, classes, seed=0)
        start = time.perf_counter()
        model.train_with_sgd(data, num_iter=500, learning_rate=0.01, batch_size=100, print_every=-1)
        elapsed = time.perf_counter() - start
        print(f"  classes {classes:2d} x dim {dim:4d}: {elapsed:.3f} s  (goal < 0.2 s)")


def real_embeddings() -> None:
    from sklearn.linear_model import LogisticRegression

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
    learners = {
        "sklearn LogisticRegression": lambda: LogisticRegression(max_iter=3000),
        "lastlayer (train defaults)": lambda: SoftmaxRegression(momentum=0.9, seed=0),
        "lastlayer (PyCoral SGD)": lambda: SoftmaxRegression(weight_scale=5e-2, seed=0),
    }
    print("\naccuracy on held-out images (fit time)")
    for name, (X, y, Xt, yt) in splits.items():
        cells = []
        for label, make in learners.items():
            start = time.perf_counter()
            model = make().fit(X, y)
            elapsed = time.perf_counter() - start
            cells.append(f"{label}: {model.score(Xt, yt):.3f} ({elapsed:.2f} s)")
        print(f"  {name:22} " + " | ".join(cells))


if __name__ == "__main__":
    pycoral_cases()
    real_embeddings()
