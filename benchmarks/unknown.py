"""Unknown answers on the shared data: lastlayer's rule against the simplest rule, side by side.

Clothing has 10 classes; each draw holds 2 of them out as *near* unknowns (same domain; every one of
the 45 pairs in turn) and teaches the other 8 from 5 photos each (drawn with seed = draw) or from
all 40 of their train photos. *Known*: the test photos of the 8 classes; *near*: every photo (train
and test) of the 2 held out; *far*: the 400 flowers and the shared images. Embeddings come from the
library's cached path (``embed_dataset``), so a second run is quick.

Heads: imprinting (:class:`ImprintingHead`) and the tuned softmax head (:class:`TunedSoftmaxRegression`,
what ``lastlayer train`` fits). Rules:

* *simplest*: max cosine to the class means (the imprinted rows), one global threshold: the
  ``target`` quantile (5 %) of the examples' leave-one-out cosines to their own class;
* *lastlayer*: :class:`lastlayer.learn.unknown.UnknownRule` with its defaults.

Per cell, mean ± sd over the draws: the head's plain top-1 on the known photos; for each rule with
the threshold it derived from the taught photos: known-class accuracy (accepted and right), near
and far rejected; and the separation itself: near and far rejected when each rule's threshold is
moved (on the test photos: an oracle) to cost exactly up to 0.03 known-class accuracy. ``cost`` is
the plain top-1 minus the known-class accuracy with the rule, ``>0.03`` the draws where it exceeded
0.03. ``paired``
is lastlayer minus simplest of the near rejection at that cost, draw by draw (mean, and in how many
draws lastlayer rejected more / fewer).

``--design`` prints the measurements behind the rule's design instead: which signal separates
known from unknown at a cost of 0.03 (softmax probabilities, logits, cosine to class centres with
power 1 or 2, per-class standardised cosine: ``(cosine - class mean) / class spread`` of the left-out
similarities, the pooled ones for a class with fewer than 2).
"""

from __future__ import annotations

import argparse
import itertools
import time
import warnings

import numpy as np
from _common import SHARED

from lastlayer import Interpreter, open_model
from lastlayer.embeddings.cache import embed_dataset
from lastlayer.files.datasets import is_image_file, load_dataset
from lastlayer.learn.imprinting import ImprintingHead
from lastlayer.learn.tuned import TunedSoftmaxRegression
from lastlayer.learn.unknown import TARGET_REJECTION, UnknownRule, embed_features, left_out_similarities
from lastlayer.model.export import extractor_model
from lastlayer.runtime import extract_embeddings

warnings.simplefilter("ignore")
EXTRACTORS = {"v1": "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite", "v2": "mobilenet_v2_1.0_224_quant.tflite"}
COST = 0.03
HELD_OUT = 2


def embeddings(name: str) -> dict[str, np.ndarray]:
    """Embeddings (and labels) of clothing train/test, the flowers and the shared images with one extractor."""
    interpreter = Interpreter(extractor_model(open_model(EXTRACTORS[name])))
    clothing = SHARED / "datasets" / "clothing"
    train = embed_dataset(interpreter, load_dataset(clothing / "train"), progress=False)
    test = embed_dataset(interpreter, load_dataset(clothing / "test"), progress=False)
    flowers = embed_dataset(interpreter, load_dataset(SHARED / "datasets" / "flowers"), progress=False)
    images = sorted(p for p in (SHARED / "images").rglob("*") if is_image_file(p))
    loose = extract_embeddings(interpreter, images, progress=False)
    return {"train_X": train.X, "train_y": train.y, "test_X": test.X, "test_y": test.y,
            "far": np.concatenate([flowers.X, loose])}


class Simplest:
    """Max cosine to the class means; one threshold: the ``target`` quantile of the leave-one-out cosines."""

    def __init__(self, X: np.ndarray, y: np.ndarray, classes: int, target: float) -> None:
        units = embed_features(X, 1.0)
        sums = np.zeros((classes, units.shape[1]))
        np.add.at(sums, y, units)
        self.rows = sums / np.linalg.norm(sums, axis=1, keepdims=True)
        own = left_out_similarities(units, y, classes).own
        self.threshold = float(np.quantile(own[np.isfinite(own)], target))

    def similarity(self, X: np.ndarray) -> np.ndarray:
        return (embed_features(X, 1.0) @ self.rows.T).max(axis=1)


def at_cost(known: np.ndarray, right: np.ndarray, others: list[np.ndarray], cost: float = COST) -> list[float]:
    """Share of each of ``others`` rejected at the highest threshold that costs at most ``cost`` known-class accuracy."""
    allowed = right.mean() - cost - 1e-12
    candidates = np.unique(known[right])  # the cost only changes at the scores of right answers
    accuracy = np.array([np.mean(right & (known >= t)) for t in candidates])
    threshold = candidates[accuracy >= allowed].max() if np.any(accuracy >= allowed) else -np.inf
    return [float(np.mean(o < threshold)) for o in others]


def draws(data: dict[str, np.ndarray], shots: int | None, pairs: list[tuple[int, ...]]):
    """(taught X, y, known X, y, near X) per draw; ``pairs`` are the held-out classes of each draw."""
    Xtr, ytr, Xte, yte = data["train_X"], data["train_y"], data["test_X"], data["test_y"]
    for draw, held in enumerate(pairs):
        known = [c for c in range(10) if c not in held]
        ids = np.full(10, -1)
        ids[known] = np.arange(len(known))
        taught = np.isin(ytr, known)
        X, y = Xtr[taught], ids[ytr[taught]]
        if shots is not None:
            rng = np.random.default_rng(draw)
            rows = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:shots] for c in range(len(known))])
            X, y = X[rows], y[rows]
        tested = np.isin(yte, known)
        yield X, y, Xte[tested], ids[yte[tested]], np.concatenate([Xte[~tested], Xtr[~taught]])


def fit_head(kind: str, X: np.ndarray, y: np.ndarray, seed: int):
    return ImprintingHead().fit(X, y) if kind == "imprint" else TunedSoftmaxRegression(seed=seed).fit(X, y)


def table(data: dict[str, np.ndarray], pairs: list[tuple[int, ...]], target: float) -> None:
    print(f"{'head':8} {'shots':>5}  {'plain':>11} | {'rule':9} {'known acc':>11} {'cost':>11} {'>0.03':>5} {'near rej':>11} "
          f"{'far rej':>11} | {'near @0.03':>11} {'far @0.03':>11}")
    for kind, shots in itertools.product(("imprint", "softmax"), (5, None)):
        rows: dict[str, list[tuple[float, ...]]] = {"simplest": [], "lastlayer": []}
        plain = []
        for draw, (X, y, Xk, yk, near) in enumerate(draws(data, shots, pairs)):
            head = fit_head(kind, X, y, draw)
            right = head.predict(Xk) == yk
            plain.append(right.mean())
            rules = {"simplest": Simplest(X, y, 8, target), "lastlayer": UnknownRule.fit(X, y, target=target)}
            for name, rule in rules.items():
                known, n, f = rule.similarity(Xk), rule.similarity(near), rule.similarity(data["far"])
                t = rule.threshold
                accuracy = np.mean(right & (known >= t))
                rows[name].append((accuracy, right.mean() - accuracy, np.mean(n < t), np.mean(f < t), *at_cost(known, right, [n, f])))
        label = f"{kind:8} {shots or 'all':>5}  {_cell(plain)}"
        for name, values in rows.items():
            v = np.array(values)
            over = int(np.sum(v[:, 1] > COST + 1e-9))
            print(f"{label} | {name:9} {_cell(v[:, 0])} {_cell(v[:, 1])} {over:>5} {_cell(v[:, 2])} {_cell(v[:, 3])} | "
                  f"{_cell(v[:, 4])} {_cell(v[:, 5])}")
            label = " " * len(label)
        diff = np.array(rows["lastlayer"])[:, 4] - np.array(rows["simplest"])[:, 4]
        print(f"{'':17}paired near @0.03 lastlayer - simplest: {diff.mean():+.3f} ± {diff.std():.3f}; "
              f"more in {(diff > 0).sum()}, fewer in {(diff < 0).sum()} of {len(diff)} draws", flush=True)


def _cell(values) -> str:
    return f"{np.mean(values):.3f}±{np.std(values):.3f}"


def _lse(logits: np.ndarray) -> np.ndarray:
    top = logits.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True)))[:, 0]


def design(data: dict[str, np.ndarray], pairs: list[tuple[int, ...]]) -> None:
    """Near and far rejected at cost 0.03 for each candidate signal (an oracle threshold: the signal alone)."""
    print(f"{'head':8} {'shots':>5}  {'signal':24} {'near @0.03':>11} {'far @0.03':>11}  paired near vs cosine p=1")
    for kind, shots in itertools.product(("imprint", "softmax"), (5, None)):
        cells: dict[str, list[tuple[float, float]]] = {}
        for draw, (X, y, Xk, yk, near) in enumerate(draws(data, shots, pairs)):
            head = fit_head(kind, X, y, draw)
            right = head.predict(Xk) == yk
            p1, p2 = UnknownRule.fit(X, y, power=1.0), UnknownRule.fit(X, y, power=2.0)
            pooled = np.concatenate([np.asarray(v) for v in p2.left_out])  # classes with too few values take the pooled ones
            spread = np.array([[pooled.mean() if c.mean is None else c.mean, pooled.std() if c.spread is None else c.spread]
                               for c in p2.classes])

            def standardised(Z: np.ndarray, rule: UnknownRule = p2, spread: np.ndarray = spread) -> np.ndarray:
                sims = rule.similarities(Z)
                best = np.nanargmax(sims, axis=1)
                return (sims[np.arange(len(Z)), best] - spread[best, 0]) / spread[best, 1]

            signals = {"max probability": lambda Z, h=head: h.predict_proba(Z).max(axis=1),
                       "max logit": lambda Z, h=head: h.decision_function(Z).max(axis=1),
                       "energy (logsumexp)": lambda Z, h=head: _lse(h.decision_function(Z)),
                       "cosine to centres p=1": p1.similarity, "cosine to centres p=2": p2.similarity,
                       "per-class z, p=2": standardised}
            for name, signal in signals.items():
                cells.setdefault(name, []).append(tuple(at_cost(signal(Xk), right, [signal(near), signal(data["far"])])))
        base = np.array(cells["cosine to centres p=1"])[:, 0]
        for name, values in cells.items():
            v = np.array(values)
            diff = v[:, 0] - base
            print(f"{kind:8} {shots or 'all':>5}  {name:24} {_cell(v[:, 0])} {_cell(v[:, 1])}  {diff.mean():+.3f} "
                  f"(more in {(diff > 0).sum()}, fewer in {(diff < 0).sum()})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="15 held-out pairs instead of all 45, MobileNet v1 only")
    parser.add_argument("--extractors", nargs="+", choices=sorted(EXTRACTORS), default=None, help="default: v1 and v2")
    parser.add_argument("--design", action="store_true", help="print the measurements behind the design instead")
    parser.add_argument("--target", type=float, default=TARGET_REJECTION, help="the rules' target rejection of left-out examples")
    args = parser.parse_args()
    pairs = list(itertools.combinations(range(10), HELD_OUT))[:: 3 if args.quick else 1]
    for name in args.extractors or (["v1"] if args.quick else ["v1", "v2"]):
        start = time.perf_counter()
        data = embeddings(name)
        print(f"\n{EXTRACTORS[name]} ({name}): {len(pairs)} draws per row, {len(data['far'])} far-away photos, "
              f"target {args.target}; mean±sd over draws")
        design(data, pairs) if args.design else table(data, pairs, args.target)
        print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
