"""Retrain the last layer of a classifier with backpropagation: PyCoral's example, ported to lastlayer.

Same flags and outputs as PyCoral's ``examples/backprop_last_layer.py``; the only change a porting
user needs is the import. Runs on the CPU, or on the Edge TPU for a ``_edgetpu`` extractor when the
runtime is installed.

    python examples/backprop_last_layer.py \\
        --embedding_extractor_path mobilenet_v1_1.0_224_quant_embedding_extractor.tflite \\
        --data_dir flower_photos --output_dir /tmp/retrain/output
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from lastlayer import Interpreter, LastLayerError, extract_embeddings, resolve_model
from lastlayer.data import load_dataset
from lastlayer.learn import SoftmaxRegression
from lastlayer.model.labels import write_label_file


def get_image_paths(data_dir: str):
    """Class-per-folder dataset, classes in sorted order; 80 % train, 10 % validation, 10 % test."""
    dataset = load_dataset(data_dir)
    for name, count in dataset.counts().items():
        print(f"{name}: {count} images")
    order = np.random.default_rng(0).permutation(len(dataset))
    num_val = num_test = int(0.1 * len(dataset))
    return dataset, order[num_val + num_test:], order[:num_val], order[num_val:num_val + num_test]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedding_extractor_path", required=True, help="path to the embedding extractor .tflite")
    parser.add_argument("--data_dir", required=True, help="directory with one sub-directory of images per class")
    parser.add_argument("--output_dir", default="/tmp/retrain/output", help="where to write the model and label map")
    args = parser.parse_args()
    if not os.path.exists(args.data_dir):
        sys.exit(f"{args.data_dir} does not exist!")
    os.makedirs(args.output_dir, exist_ok=True)
    try:
        extractor = resolve_model(args.embedding_extractor_path)
        start = time.perf_counter()
        dataset, train, val, test = get_image_paths(args.data_dir)
        interpreter = Interpreter(extractor)
        embeddings = extract_embeddings(interpreter, dataset.paths)
        print(f"Data preprocessing takes {time.perf_counter() - start:.2f} seconds")

        start = time.perf_counter()
        model = SoftmaxRegression(embeddings.shape[1], len(dataset.classes), weight_scale=5e-2, reg=0.0, seed=0)
        data = {"data_train": embeddings[train], "labels_train": dataset.labels[train],
                "data_val": embeddings[val], "labels_val": dataset.labels[val]}
        model.train_with_sgd(data, num_iter=500, learning_rate=1e-2, batch_size=100)
        print(f"Training takes {time.perf_counter() - start:.2f} seconds")

        start = time.perf_counter()
        out_model_path = os.path.join(args.output_dir, "retrained_model_edgetpu.tflite")
        with open(out_model_path, "wb") as handle:
            handle.write(model.serialize_model(extractor, labels=dataset.classes))
        write_label_file(os.path.join(args.output_dir, "label_map.txt"), dataset.classes)
        print(f"Saving retrained model and label map takes {time.perf_counter() - start:.2f} seconds")

        start = time.perf_counter()
        retrained = Interpreter(out_model_path)
        hits = [np.argmax(retrained.run_file(dataset.paths[i])) == dataset.labels[i] for i in test]
        print(f"Checking test accuracy takes {time.perf_counter() - start:.2f} seconds")
        print(f"Saved-model accuracy on the test set: {100 * np.mean(hits):.2f}%")
    except LastLayerError as exc:
        sys.exit(f"error: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
