r"""Teach a model new categories from a folder of images with weight imprinting, then test it.

Written against PyCoral's API: replace ``lastlayer.pycoral.`` with ``pycoral.`` and it runs with PyCoral
(which needs Coral's L2-norm model, e.g. mobilenet_v1_1.0_224_l2norm_quant_edgetpu.tflite; lastlayer
also takes a plain embedding extractor or classifier).

    python examples/pycoral/imprinting_learning.py \
        --model_path mobilenet_v1_1.0_224_l2norm_quant.tflite --data open_image_v4_subset

The data folder holds one sub-folder of images per category. Per category, the first
``--test_ratio`` of the (sorted) images are kept for testing and the rest are imprinted.
"""

from __future__ import annotations

import argparse
import os
import time

from PIL import Image

from lastlayer.pycoral.adapters import classify, common
from lastlayer.pycoral.learn.imprinting.engine import ImprintingEngine
from lastlayer.pycoral.utils.edgetpu import make_interpreter

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".webp")


def split_dataset(data_dir: str, test_ratio: float) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """``({category: train paths}, {category: test paths})``, categories and files in sorted order."""
    train, test = {}, {}
    for category in sorted(os.listdir(data_dir)):
        folder = os.path.join(data_dir, category)
        if not os.path.isdir(folder):
            continue
        files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not files:
            continue
        count = max(int(test_ratio * len(files)), 1)
        if len(files) <= count:
            raise SystemExit(f"category {category} needs at least 2 images (one to train, one to test)")
        test[category], train[category] = files[:count], files[count:]
    return train, test


def load(path: str, size: tuple[int, int]) -> Image.Image:
    return Image.open(path).convert("RGB").resize(size, Image.BILINEAR)


def train_engine(engine: ImprintingEngine, train: dict[str, list[str]]) -> dict[int, str]:
    """Imprint every training image; returns the labels of the new classes (ids after any kept ones)."""
    extractor = make_interpreter(engine.serialize_extractor_model())
    extractor.allocate_tensors()
    size = common.input_size(extractor)
    first_id = engine.num_classes
    labels = {}
    for offset, (category, paths) in enumerate(train.items()):
        print(f"Processing category {category}: {len(paths)} images")
        for path in paths:
            common.set_input(extractor, load(path, size))
            extractor.invoke()
            engine.train(classify.get_scores(extractor), first_id + offset)
        labels[first_id + offset] = category
    return labels


def evaluate(model_path: str, test: dict[str, list[str]], labels: dict[int, str]) -> list[float]:
    """Top-1 ... top-5 accuracy of the saved model on the test images."""
    ids = {name: class_id for class_id, name in labels.items()}
    interpreter = make_interpreter(model_path)
    interpreter.allocate_tensors()
    size = common.input_size(interpreter)
    hits, total = [0] * 5, 0
    for category, paths in test.items():
        for path in paths:
            common.set_input(interpreter, load(path, size))
            interpreter.invoke()
            found = [c.id for c in classify.get_classes(interpreter, top_k=5, score_threshold=0.1)]
            for k in range(5):
                hits[k] += ids[category] in found[:k + 1]
            total += 1
    return [h / max(total, 1) for h in hits]


def main() -> None:
    parser = argparse.ArgumentParser(description="Imprint new categories into a model.")
    parser.add_argument("--model_path", required=True, help="model to imprint")
    parser.add_argument("--data", required=True, help="folder with one sub-folder of images per category")
    parser.add_argument("--output", help="output model (default: <model name>_retrained.tflite)")
    parser.add_argument("--test_ratio", type=float, default=0.25, help="share of each category kept for testing")
    parser.add_argument("--keep_classes", action="store_true", help="keep the model's classes")
    args = parser.parse_args()
    if not 0 < args.test_ratio < 1:
        parser.error("--test_ratio must be between 0 and 1")
    output = args.output or os.path.splitext(os.path.basename(args.model_path))[0] + "_retrained.tflite"

    print("-" * 40)
    print(f"Output model: {output}\nTest ratio: {args.test_ratio:.0%}")
    train, test = split_dataset(args.data, args.test_ratio)
    print(f"{len(train)} categories")
    engine = ImprintingEngine(args.model_path, keep_classes=args.keep_classes)
    start = time.perf_counter()
    labels = train_engine(engine, train)
    with open(output, "wb") as handle:
        handle.write(engine.serialize_model())
    label_path = os.path.splitext(output)[0] + ".txt"
    with open(label_path, "w", encoding="utf-8") as handle:
        handle.writelines(f"{class_id}  {name}\n" for class_id, name in sorted(labels.items()))
    print(f"Training took {time.perf_counter() - start:.2f} s")
    print(f"Model saved as {output}\nLabels saved as {label_path}")

    print("-" * 40)
    for k, accuracy in enumerate(evaluate(output, test, labels), start=1):
        print(f"Top {k} : {accuracy:.0%}")


if __name__ == "__main__":
    main()
