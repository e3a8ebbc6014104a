"""Accuracy table on the shared flowers and clothing datasets: every learner on the same embeddings and draws.

For k = 1, 5, 10 shots per class and all photos, 5 draws each: flowers is split 25 % held out
(stratified, seed = draw) and k photos per class are drawn from the rest; clothing keeps its own
train/test folders and draws k photos per class from train (with all of train every draw is the
same data). Columns: plain imprinting, imprinting + ``finetune()`` (guarded), the tuned backprop
head (:class:`TunedSoftmaxRegression`, what ``lastlayer train`` uses) and scikit-learn's
``LogisticRegressionCV`` (5-fold or k-fold when k < 5; at k = 1 no CV is possible, so plain
``LogisticRegression(C=1)``, marked ``*``), all under one BLAS thread. Cells are mean ± sd of
held-out top-1 over the draws; ``!`` flags fine-tuning below plain imprinting by more than the
larger sd. The last lines give the tuned head's fit time against scikit-learn's, same draws.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from _common import SHARED

from lastlayer import Interpreter, resolve_model
from lastlayer.embeddings.cache import embed_dataset
from lastlayer.files.datasets import load_dataset, stratified_split, take_shots
from lastlayer.learn.imprinting import ImprintingHead
from lastlayer.learn.tuned import TunedSoftmaxRegression
from lastlayer.model.zoo import DEFAULT_EXTRACTOR

warnings.simplefilter("ignore")
SHOTS = (1, 5, 10, None)
DRAWS = 5
COLUMNS = ("imprint", "imprint + finetune", "backprop (tuned)", "sklearn LR-CV")


def draws_of(name: str, embed) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(train X, train y, test X, test y) pools for each draw, before shots are taken."""
    if name == "flowers":
        data = embed(SHARED / "datasets" / "flowers")
        return [(data.X[tr], data.y[tr], data.X[te], data.y[te]) for tr, te in
                (stratified_split(data.y, 0.25, seed) for seed in range(DRAWS))]
    train, test = embed(SHARED / "datasets" / "clothing" / "train"), embed(SHARED / "datasets" / "clothing" / "test")
    return [(train.X, train.y, test.X, test.y)] * DRAWS


def run_cell(X, y, Xt, yt, shots: int | None, seed: int, times: dict[str, list[float]]) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

    rows = np.arange(len(y)) if shots is None else take_shots(np.arange(len(y)), y, shots, seed)
    X, y = X[rows], y[rows]
    scores = {"imprint": float(np.mean(ImprintingHead().fit(X, y).predict(Xt) == yt))}
    head = ImprintingHead().fit(X, y)
    head.finetune()
    scores["imprint + finetune"] = float(np.mean(head.predict(Xt) == yt))
    start = time.perf_counter()
    scores["backprop (tuned)"] = TunedSoftmaxRegression(seed=seed).fit(X, y).score(Xt, yt)
    times["tuned"].append(time.perf_counter() - start)
    folds = min(5, int(np.bincount(y).min()))
    start = time.perf_counter()
    reference = LogisticRegressionCV(cv=folds, max_iter=1000) if folds >= 2 else LogisticRegression(max_iter=1000)
    scores["sklearn LR-CV"] = float(reference.fit(X, y).score(Xt, yt))
    times["sklearn"].append(time.perf_counter() - start)
    return scores


def main() -> None:
    import argparse

    from threadpoolctl import threadpool_limits

    global DRAWS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 draws per cell instead of 5")
    if parser.parse_args().quick:
        DRAWS = 3

    interpreter = Interpreter(resolve_model(DEFAULT_EXTRACTOR))

    def embed(path):
        return embed_dataset(interpreter, load_dataset(path), progress=False)

    times: dict[str, list[float]] = {"tuned": [], "sklearn": []}
    gaps = []
    print(f"{DRAWS} draws per cell, held-out top-1 mean ± sd; one BLAS thread for every learner")
    print(f"{'dataset':9} {'k':>4}  " + "  ".join(f"{c:>18}" for c in COLUMNS))
    with threadpool_limits(1, user_api="blas"):
        for name in ("flowers", "clothing"):
            pools = draws_of(name, embed)
            for shots in SHOTS:
                cells = [run_cell(*pools[seed], shots, seed, times) for seed in range(DRAWS)]
                stats = {c: (np.mean([cell[c] for cell in cells]), np.std([cell[c] for cell in cells])) for c in COLUMNS}
                flag = stats["imprint + finetune"][0] < stats["imprint"][0] - max(stats["imprint"][1], stats["imprint + finetune"][1])
                gaps.append(stats["backprop (tuned)"][0] - stats["sklearn LR-CV"][0])
                text = [f"{m:.3f} ± {s:.3f}" + ("!" if c == "imprint + finetune" and flag else " ") for c, (m, s) in stats.items()]
                text[-1] = text[-1].rstrip() + ("*" if shots == 1 else " ")
                print(f"{name:9} {'all' if shots is None else shots:>4}  " + "  ".join(f"{t:>18}" for t in text), flush=True)
    ratio = np.array(times["tuned"]) / np.array(times["sklearn"])
    print(f"\ntuned - sklearn accuracy per row: min {min(gaps):+.3f}, mean {np.mean(gaps):+.3f}, max {max(gaps):+.3f} (goal >= -0.005)")
    print(f"fit time tuned / sklearn per fit: min {ratio.min():.2f}, median {np.median(ratio):.2f}, max {ratio.max():.2f}; "
          f"total {sum(times['tuned']):.1f} s vs {sum(times['sklearn']):.1f} s (goal <= 1)")


if __name__ == "__main__":
    main()
