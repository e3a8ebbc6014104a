# Lint as: python3
# Copyright 2019 Google LLC
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     https://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""PyCoral's own keep-classes test (tests/imprinting_engine_test.py), run on an ordinary ImageNet classifier.

Only the import prefix changed (``pycoral.`` -> ``lastlayer.pycoral.``), the model list names the plain
MobileNet v2 classifier instead of Coral's L2-norm imprinting model (no longer obtainable), and
PyCoral's ``tests.test_utils`` is replaced by a shim over the shared test data.
"""

import collections
import contextlib
import types
import unittest

from PIL import Image

from lastlayer.pycoral.adapters import classify, common
from lastlayer.pycoral.learn.imprinting.engine import ImprintingEngine
from lastlayer.pycoral.utils.edgetpu import make_interpreter

from conftest import MODELS, SHARED, need


@contextlib.contextmanager
def _test_image(path, *paths):
  with open(_test_data_path(path, *paths), 'rb') as f, Image.open(f) as image:
    yield image


def _test_data_path(path, *paths):
  root = SHARED / 'images' if path == 'imprinting' else MODELS
  return str(need(root.joinpath(path, *paths)))


test_utils = types.SimpleNamespace(test_image=_test_image, test_data_path=_test_data_path)

_MODEL_LIST = [
    'mobilenet_v2_1.0_224_quant.tflite',
]

TrainPoint = collections.namedtuple('TainPoint', ['images', 'class_id'])
TestPoint = collections.namedtuple('TainPoint', ['image', 'class_id', 'score'])
TestPoint.__test__ = False  # a record, not a test class for pytest


def set_input(interpreter, image):
  size = common.input_size(interpreter)
  common.set_input(interpreter, image.resize(size, Image.NEAREST))


class TestImprintingEnginePythonAPI(unittest.TestCase):

  def _train_and_test(self, model_path, train_points, test_points,
                      keep_classes):
    # Train.
    engine = ImprintingEngine(model_path, keep_classes)

    extractor = make_interpreter(
        engine.serialize_extractor_model(), device=':0')
    extractor.allocate_tensors()

    for point in train_points:
      for image in point.images:
        with test_utils.test_image('imprinting', image) as img:
          set_input(extractor, img)
          extractor.invoke()
          embedding = classify.get_scores(extractor)
          self.assertEqual(len(embedding), engine.embedding_dim)
          engine.train(embedding, point.class_id)

    # Test.
    trained_model = engine.serialize_model()
    classifier = make_interpreter(trained_model, device=':0')
    classifier.allocate_tensors()

    self.assertEqual(len(classifier.get_output_details()), 1)

    if not keep_classes:
      self.assertEqual(len(train_points), classify.num_classes(classifier))

    for point in test_points:
      with test_utils.test_image('imprinting', point.image) as img:
        set_input(classifier, img)
        classifier.invoke()
        top = classify.get_classes(classifier, top_k=1)[0]
        self.assertEqual(top.id, point.class_id)
        self.assertGreater(top.score, point.score)

    return trained_model

  # Test full model, keeping base model classes.
  def test_training_l2_norm_model_keep_classes(self):
    train_points = [
        TrainPoint(images=['cat_train_0.bmp'], class_id=1001),
        TrainPoint(images=['dog_train_0.bmp'], class_id=1002),
        TrainPoint(
            images=['hotdog_train_0.bmp', 'hotdog_train_1.bmp'], class_id=1003)
    ]
    test_points = [
        TestPoint(image='cat_test_0.bmp', class_id=1001, score=0.99),
        TestPoint(image='hotdog_test_0.bmp', class_id=1003, score=0.92)
    ]
    for model_path in _MODEL_LIST:
      with self.subTest(model_path=model_path):
        self._train_and_test(
            test_utils.test_data_path(model_path),
            train_points,
            test_points,
            keep_classes=True)


if __name__ == '__main__':
  unittest.main()
