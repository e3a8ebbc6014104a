r"""Classify one image with a TensorFlow Lite classifier, on the CPU or an Edge TPU.

Written against PyCoral's API: replace ``lastlayer.pycoral.`` with ``pycoral.`` and it runs with PyCoral.

    python examples/pycoral/classify_image.py \
        --model mobilenet_v2_1.0_224_quant.tflite --labels imagenet_labels.txt --input parrot.jpg
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image

from lastlayer.pycoral.adapters import classify, common
from lastlayer.pycoral.utils.dataset import read_label_file
from lastlayer.pycoral.utils.edgetpu import make_interpreter


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Classify an image.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("-m", "--model", required=True, help="model file (.tflite); 'path@device' picks an Edge TPU, e.g. m.tflite@usb")
    parser.add_argument("-i", "--input", required=True, help="image to classify")
    parser.add_argument("-l", "--labels", help="label file")
    parser.add_argument("-k", "--top_k", type=int, default=1, help="how many classes to show")
    parser.add_argument("-t", "--threshold", type=float, default=0.0, help="lowest score to show")
    parser.add_argument("-c", "--count", type=int, default=5, help="how many times to run the model")
    parser.add_argument("-a", "--input_mean", type=float, default=128.0, help="mean the model's input was normalised with")
    parser.add_argument("-s", "--input_std", type=float, default=128.0, help="standard deviation of that normalisation")
    return parser.parse_args()


def prepare_input(interpreter, image: Image.Image, mean: float, std: float) -> None:
    """Resize ``image`` to the input size and write it, normalised, into the input tensor."""
    if common.input_details(interpreter, "dtype") != np.uint8:
        raise ValueError("Only support uint8 input type.")
    pixels = np.asarray(image.convert("RGB").resize(common.input_size(interpreter), Image.LANCZOS))
    scale, zero_point = common.input_details(interpreter, "quantization")
    if abs(scale * std - 1) < 1e-5 and abs(mean - zero_point) < 1e-5:
        common.set_input(interpreter, pixels)  # the model takes raw pixels
        return
    normalised = (pixels.astype(np.float32) - mean) / (std * scale) + zero_point
    common.set_input(interpreter, np.clip(np.round(normalised), 0, 255).astype(np.uint8))


def main() -> None:
    args = parse_args()
    model_path, _, device = args.model.partition("@")
    interpreter = make_interpreter(model_path, device=device or None)
    interpreter.allocate_tensors()
    if common.input_details(interpreter, "shape")[0] != 1:
        raise ValueError("Only a batch size of 1 is supported.")
    labels = read_label_file(args.labels) if args.labels else {}
    prepare_input(interpreter, Image.open(args.input), args.input_mean, args.input_std)

    print("----INFERENCE TIME----")
    print("Note: The first inference is slow: it loads the model and, on an Edge TPU, its parameters.")
    classes = []
    for _ in range(args.count):
        start = time.perf_counter()
        interpreter.invoke()
        classes = classify.get_classes(interpreter, args.top_k, args.threshold)
        print(f"{(time.perf_counter() - start) * 1000:.1f}ms")

    print("-------RESULTS--------")
    for klass in classes:
        print(f"{labels.get(klass.id, klass.id)}: {klass.score:.5f}")


if __name__ == "__main__":
    main()
