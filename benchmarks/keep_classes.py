"""Keeping a classifier's own classes while adding new ones: agreement with the original model, new-class top-1.

For each ImageNet classifier (MobileNet v1 0.25/128 and 0.5/160, v2 1.0/224, the TF2 PTQ v2 with int8
inside) and k = 1, 5, 10 shots per new class, DRAWS draws of each of two new-class sets:

* clothing (10 classes): shots drawn from clothing/train, held out: clothing/test; the other
  pictures: flowers and the shared images;
* flowers (5 classes): shots drawn from a stratified 75 % (seed = draw), held out: the other 25 %;
  the other pictures: clothing train + test and the shared images.

Columns (mean ± sd over the 2 x DRAWS draws): ``agree``: top-1 of the saved model with the new classes
equals the original model's top-1, on the other pictures (label-free); ``new``: top-1 of the saved
model on held-out photos of the new classes, every class competing; ``alone``: imprinting the new
classes alone (``ImprintingHead``, cosine, new classes only); ``new-alone``: their difference per draw;
``q-f agree`` / ``q-f new``: the saved (quantized) model minus the same rule in float
(``KeepClassesHead`` without the logit range), i.e. what quantizing costs; ``s``: the scale the head
chose for the saved model. The saved models run in LiteRT from the embedding on
(``scores_from_embedding``), on embeddings from the cache (``embed_dataset``), so a second run skips
extraction.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import warnings
from pathlib import Path

import numpy as np
from _common import SHARED

from lastlayer import Interpreter
from lastlayer.embeddings.cache import embed_dataset
from lastlayer.files.datasets import load_dataset, stratified_split, take_shots
from lastlayer.learn.imprinting import ImprintingHead
from lastlayer.learn.keep import KeepClassesHead
from lastlayer.model.export import extractor_model
from lastlayer.model.file import ModelFile
from lastlayer.model.keep import read_class_layer, scores_from_embedding, write_appended_classes
from lastlayer.model.zoo import open_model

warnings.simplefilter("ignore")
MODELS = ("mobilenet_v1_0.25_128_quant.tflite", "mobilenet_v1_0.5_160_quant.tflite", "mobilenet_v2_1.0_224_quant.tflite",
          "tf2_mobilenet_v2_1.0_224_ptq.tflite")
SHOTS = (1, 5, 10)
DRAWS = 5


class ScoreRunner:
    """A model's scores from embeddings, run by LiteRT one embedding at a time."""

    def __init__(self, model: ModelFile) -> None:
        from ai_edge_litert.interpreter import Interpreter as LiteRT

        self.interpreter = LiteRT(model_content=scores_from_embedding(model).data, num_threads=1)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def top1(self, X: np.ndarray) -> np.ndarray:
        dtype, (scale, zero) = self.input["dtype"], self.input["quantization"]
        if dtype != np.float32:
            info = np.iinfo(dtype)
            X = np.clip(np.round(X / scale + zero), info.min, info.max)
        out = []
        for x in X.astype(dtype):
            self.interpreter.set_tensor(self.input["index"], x.reshape(self.input["shape"]))
            self.interpreter.invoke()
            out.append(int(np.argmax(self.interpreter.get_tensor(self.output["index"]))))
        return np.array(out)


def embeddings(name: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    base = open_model(name)
    interpreter = Interpreter(extractor_model(base))
    out = {}
    with tempfile.TemporaryDirectory() as folder:
        listing = Path(folder) / "images.csv"  # the shared images as one class, for load_dataset
        with open(listing, "w", newline="") as handle:
            writer = csv.writer(handle)
            for path in sorted(p for p in (SHARED / "images").rglob("*") if p.suffix.lower() in {".bmp", ".jpg", ".png"}):
                writer.writerow([str(path), "image"])
        sources = {"flowers": SHARED / "datasets" / "flowers", "clothing_train": SHARED / "datasets" / "clothing" / "train",
                   "clothing_test": SHARED / "datasets" / "clothing" / "test", "images": listing}
        for key, source in sources.items():
            data = embed_dataset(interpreter, load_dataset(source), progress=False)
            out[key] = (data.X.astype(np.float64), data.y)
    return out


def draws(data: dict, new_set: str, seed: int, shots: int):
    if new_set == "clothing":
        (X, y), (Xt, yt) = data["clothing_train"], data["clothing_test"]
        others = np.concatenate([data["flowers"][0], data["images"][0]])
    else:
        X_all, y_all = data["flowers"]
        train, test = stratified_split(y_all, 0.25, seed)
        X, y, Xt, yt = X_all[train], y_all[train], X_all[test], y_all[test]
        others = np.concatenate([data["clothing_train"][0], data["clothing_test"][0], data["images"][0]])
    rows = take_shots(np.arange(len(y)), y, shots, seed)
    return X[rows], y[rows], Xt, yt, others


def run_cell(base: ModelFile, original: ScoreRunner, layer, draw) -> dict[str, float]:
    Xs, ys, Xt, yt, others = draw
    C = layer.num_classes
    saved_head = KeepClassesHead(layer.weights, layer.bias, layer.labels, logit_range=layer.logit_range,
                                 max_logit_shift=layer.max_logit_shift).fit(Xs, ys + C)
    float_head = KeepClassesHead(layer.weights, layer.bias, layer.labels).fit(Xs, ys + C)
    saved = ScoreRunner(ModelFile.from_bytes(write_appended_classes(base, saved_head.export())))
    before = original.top1(others)
    result = {"agree": float(np.mean(saved.top1(others) == before)), "new": float(np.mean(saved.top1(Xt) == yt + C)),
              "alone": float(np.mean(ImprintingHead().fit(Xs, ys).predict(Xt) == yt))}
    result["new-alone"] = result["new"] - result["alone"]
    result["s"] = saved_head.scale
    float_before = np.argmax(float_head.original_decision_function(others), axis=1)
    result["q-f agree"] = result["agree"] - float(np.mean(float_head.predict(others) == float_before))
    result["q-f new"] = result["new"] - float(np.mean(float_head.predict(Xt) == yt + C))
    return result


def main() -> None:
    global DRAWS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 draws per set instead of 5")
    parser.add_argument("--models", nargs="*", default=list(MODELS), help="classifiers to measure (default: the four)")
    args = parser.parse_args()
    if args.quick:
        DRAWS = 2
    columns = ("agree", "new", "alone", "new-alone", "q-f agree", "q-f new", "s")
    print(f"{DRAWS} draws x 2 new-class sets per cell, mean ± sd; goals: agree >= 0.99 (0.995 at 1 shot), "
          "new within 0.02 of alone at 5 and 10 shots, |q-f| <= 0.003")
    print(f"{'model':36} {'k':>3}  " + "  ".join(f"{c:>15}" for c in columns))
    for name in args.models:
        base = open_model(name)
        layer = read_class_layer(base)
        original = ScoreRunner(base)
        data = embeddings(name)
        for shots in SHOTS:
            cells = [run_cell(base, original, layer, draws(data, new_set, seed, shots))
                     for new_set in ("clothing", "flowers") for seed in range(DRAWS)]
            text = []
            for column in columns:
                values = [cell[column] for cell in cells]
                signed = "+" if column.startswith("q-f") or column == "new-alone" else ""
                text.append(f"{np.mean(values):{signed}.3f} ± {np.std(values):.3f}")
            print(f"{name:36} {shots:>3}  " + "  ".join(f"{t:>15}" for t in text), flush=True)


if __name__ == "__main__":
    main()
