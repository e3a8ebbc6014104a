"""Accuracy table on the shared flowers dataset: every learner on the same embeddings and splits.

5 repeated stratified splits (seeds 0-4, 25 % held out). Rows: imprinting with k = 1, 5, 10 and all
shots, imprint-then-finetune, the backprop head (lastlayer train settings), nearest class mean and
scikit-learn LogisticRegression, all on the same extractor embeddings (imprinting L2-normalises
them itself, as the imprinting model's L2Norm does).
"""

from __future__ import annotations

import warnings

import numpy as np
from _common import SHARED

from lastlayer import Interpreter, resolve_model
from lastlayer.data import load_dataset, stratified_split, take_shots
from lastlayer.embeddings import embed_dataset
from lastlayer.learn.imprinting import ImprintingHead
from lastlayer.learn.softmax import SoftmaxRegression
from lastlayer.zoo import DEFAULT_EXTRACTOR

warnings.simplefilter("ignore")


def main(splits: int = 5) -> None:
    from sklearn.linear_model import LogisticRegression

    base = resolve_model(DEFAULT_EXTRACTOR)
    dataset = load_dataset(SHARED / "datasets" / "flowers")
    raw = embed_dataset(Interpreter(base), dataset, progress=False)
    normalised = raw

    def imprint(shots, finetune=False):
        def run(train, test, seed):
            rows = train if shots is None else take_shots(train, normalised.y, shots, seed)
            head = ImprintingHead().fit(normalised.X[rows], normalised.y[rows])
            if finetune:
                head.finetune()
            return np.mean(head.predict(normalised.X[test]) == normalised.y[test])
        return run

    def on_raw(make):
        def run(train, test, seed):
            return np.mean(make(seed).fit(raw.X[train], raw.y[train]).predict(raw.X[test]) == raw.y[test])
        return run

    def nearest_mean(train, test, seed):
        X, y = normalised.X[train], normalised.y[train]
        means = np.stack([X[y == c].mean(axis=0) for c in range(len(dataset.classes))])
        means /= np.linalg.norm(means, axis=1, keepdims=True)
        return np.mean(np.argmax(normalised.X[test] @ means.T, axis=1) == normalised.y[test])

    methods = {
        "imprint, 1 shot": imprint(1), "imprint, 5 shots": imprint(5), "imprint, 10 shots": imprint(10),
        "imprint, all (60)": imprint(None), "imprint + finetune, 5 shots": imprint(5, True),
        "imprint + finetune, all": imprint(None, True),
        "backprop head (train defaults)": on_raw(lambda seed: SoftmaxRegression(momentum=0.9, seed=seed)),
        "nearest class mean (cosine)": nearest_mean,
        "sklearn LogisticRegression": on_raw(lambda seed: LogisticRegression(max_iter=3000)),
    }
    print(f"flowers: {len(dataset)} images, {len(dataset.classes)} classes; {splits} stratified splits, 25 % held out")
    print(f"{'method':32} {'top-1 mean':>10} {'std':>6}  per split")
    for name, run in methods.items():
        scores = []
        for seed in range(splits):
            train, test = stratified_split(dataset.labels, 0.25, seed)
            scores.append(run(train, test, seed))
        print(f"{name:32} {np.mean(scores):>10.3f} {np.std(scores):>6.3f}  " + " ".join(f"{s:.2f}" for s in scores))


if __name__ == "__main__":
    main()
