r"""Retrain the last layer of a classifier with backpropagation on a folder of images, then test it.

Written against PyCoral's API: replace ``lastlayer.pycoral.`` with ``pycoral.`` and it runs with PyCoral.

    python examples/pycoral/backprop_last_layer.py \
        --embedding_extractor_path mobilenet_v1_1.0_224_quant_embedding_extractor.tflite \
        --data_dir flower_photos --output_dir /tmp/retrain/output

The data folder holds one sub-folder of images per class. The images are shuffled (seed 0) and
split 80 % train, 10 % validation, 10 % test. Writes retrained_model.tflite and label_map.txt.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from PIL import Image

from lastlayer.pycoral.adapters import classify, common
from lastlayer.pycoral.learn.backprop.softmax_regression import SoftmaxRegression
from lastlayer.pycoral.utils.edgetpu import make_interpreter

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".webp")


def list_images(data_dir: str) -> tuple[list[str], np.ndarray, list[str]]:
    """Image paths, their class ids and the class names (sorted folder names)."""
    classes = sorted(d for d in os.listdir(data_dir) if os.path.isdir(os.path.join(data_dir, d)))
    paths, labels = [], []
    for class_id, name in enumerate(classes):
        folder = os.path.join(data_dir, name)
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        print(f"{name}: {len(files)} images")
        paths += [os.path.join(folder, f) for f in files]
        labels += [class_id] * len(files)
    return paths, np.array(labels, dtype=np.int64), classes


def extract_embeddings(paths: list[str], interpreter) -> np.ndarray:
    """One dequantized embedding per image, float32 ``[n, feature_dim]``."""
    size = common.input_size(interpreter)
    embeddings = np.empty((len(paths), classify.num_classes(interpreter)), dtype=np.float32)
    for row, path in enumerate(paths):
        common.set_input(interpreter, Image.open(path).convert("RGB").resize(size, Image.BILINEAR))
        interpreter.invoke()
        embeddings[row] = classify.get_scores(interpreter)
    return embeddings


def main() -> None:
    parser = argparse.ArgumentParser(description="Retrain the last layer of a classifier.")
    parser.add_argument("--embedding_extractor_path", required=True, help="embedding extractor (.tflite)")
    parser.add_argument("--data_dir", required=True, help="folder with one sub-folder of images per class")
    parser.add_argument("--output_dir", default="/tmp/retrain/output", help="where the model and labels go")
    parser.add_argument("--num_iter", type=int, default=500, help="SGD steps")
    parser.add_argument("--learning_rate", type=float, default=0.01, help="SGD step size")
    parser.add_argument("--batch_size", type=int, default=100, help="images per SGD step")
    args = parser.parse_args()
    if not os.path.isdir(args.data_dir):
        raise SystemExit(f"{args.data_dir} does not exist!")
    os.makedirs(args.output_dir, exist_ok=True)

    start = time.perf_counter()
    paths, labels, classes = list_images(args.data_dir)
    extractor = make_interpreter(args.embedding_extractor_path)
    extractor.allocate_tensors()
    embeddings = extract_embeddings(paths, extractor)
    order = np.random.RandomState(0).permutation(len(paths))
    num_val = num_test = int(0.1 * len(paths))
    train, val, test = order[num_val + num_test:], order[:num_val], order[num_val:num_val + num_test]
    print(f"Data preprocessing takes {time.perf_counter() - start:.2f} seconds")

    start = time.perf_counter()
    np.random.seed(0)
    model = SoftmaxRegression(embeddings.shape[1], len(classes), weight_scale=5e-2, reg=0.0)
    data = {"data_train": embeddings[train], "labels_train": labels[train],
            "data_val": embeddings[val], "labels_val": labels[val]}
    model.train_with_sgd(data, num_iter=args.num_iter, learning_rate=args.learning_rate, batch_size=args.batch_size)
    print(f"Training takes {time.perf_counter() - start:.2f} seconds")

    start = time.perf_counter()
    model_path = os.path.join(args.output_dir, "retrained_model.tflite")
    with open(model_path, "wb") as handle:
        handle.write(model.serialize_model(args.embedding_extractor_path))
    with open(os.path.join(args.output_dir, "label_map.txt"), "w", encoding="utf-8") as handle:
        handle.writelines(f"{class_id} {name}\n" for class_id, name in enumerate(classes))
    print(f"Saving retrained model and label map takes {time.perf_counter() - start:.2f} seconds")

    start = time.perf_counter()
    retrained = make_interpreter(model_path)
    retrained.allocate_tensors()
    scores = extract_embeddings([paths[i] for i in test], retrained)
    accuracy = float(np.mean(np.argmax(scores, axis=1) == labels[test])) if len(test) else float("nan")
    print(f"Checking test accuracy takes {time.perf_counter() - start:.2f} seconds")
    print(f"Saved model test accuracy: {100 * accuracy:.2f}%")


if __name__ == "__main__":
    main()
