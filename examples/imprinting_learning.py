"""Teach a model new classes with weight imprinting: PyCoral's example, ported to lastlayer.

Same flags as PyCoral's ``examples/imprinting_learning.py``. ``--model_path`` may be Coral's L2-norm
imprinting model *or any extractor / classifier* (lastlayer builds the imprinting structure), and
the label ids are right with ``--keep_classes`` (PyCoral's example wrote them without the offset).

    python examples/imprinting_learning.py \\
        --model_path mobilenet_v1_1.0_224_quant_embedding_extractor.tflite --data open_image_v4_subset
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from lastlayer import Interpreter, LastLayerError, get_classes_from_scores, resolve_model
from lastlayer.data import load_dataset, stratified_split
from lastlayer.errors import ModelError
from lastlayer.learn.imprinting import ImprintingEngine
from lastlayer.model.labels import write_label_file


def open_engine(model_path: str, keep_classes: bool) -> ImprintingEngine:
    try:
        return ImprintingEngine(model_path, keep_classes)
    except ModelError:  # not Coral's structure: build it on the extractor or classifier
        return ImprintingEngine.from_extractor(model_path, keep_classes=keep_classes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_path", required=True, help="model to imprint (Coral L2-norm model, extractor or classifier)")
    parser.add_argument("--data", required=True, help="dataset folder: one sub-folder of images per category")
    parser.add_argument("--output", help="output model (default: <model name>_retrained.tflite in the current folder)")
    parser.add_argument("--test_ratio", type=float, default=0.25, help="share of each category used for testing")
    parser.add_argument("--keep_classes", action="store_true", help="keep the model's existing classes")
    args = parser.parse_args()
    test_ratio = args.test_ratio or 0.25
    output = args.output or os.path.basename(args.model_path).replace(".tflite", "") + "_retrained.tflite"
    print("-" * 50)
    print(f"Output path: {output}\nTest ratio: {test_ratio:.0%}")
    try:
        model_path = str(resolve_model(args.model_path))
        engine = open_engine(model_path, args.keep_classes)
        offset = engine.num_classes
        dataset = load_dataset(args.data)
        train, test = stratified_split(dataset.labels, test_ratio, seed=0)
        print(f"{len(dataset.classes)} categories; preparing data (may take a while)")
        extractor = Interpreter(engine.serialize_extractor_model())
        for label, name in enumerate(dataset.classes):
            print(f"processing category: {name}")
            for index in train[dataset.labels[train] == label]:
                engine.train(extractor.run_file(dataset.paths[index]), offset + label)
            engine.set_label(offset + label, name)
        with open(output, "wb") as handle:
            handle.write(engine.serialize_model())
        label_path = os.path.splitext(output)[0] + ".txt"
        write_label_file(label_path, engine.labels)
        print(f"Model saved as: {output}\nLabels saved as: {label_path}")

        classifier = Interpreter(output)
        hits = np.zeros(5)
        for index in test:
            classes = get_classes_from_scores(classifier.run_file(dataset.paths[index]), top_k=5, score_threshold=0.1)
            ids = [c.id for c in classes]
            truth = offset + int(dataset.labels[index])
            hits += [truth in ids[:k] for k in range(1, 6)]
        for k in range(5):
            print(f"Top {k + 1} : {hits[k] / max(len(test), 1):.0%}")
    except LastLayerError as exc:
        sys.exit(f"error: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
