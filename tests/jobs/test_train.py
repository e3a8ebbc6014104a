"""The train job: each option changes what it computes (and the report says so)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lastlayer.errors import ImageError
from lastlayer.jobs.train import TrainOptions, train
from lastlayer.model.file import ModelFile, ModelKind
from lastlayer.model.surgery import class_layer_parameters, locate_embedding
from lastlayer.runtime import Interpreter

pytestmark = pytest.mark.shared
QUIET = {"progress": False, "print_every": 0}


def _weights(path) -> np.ndarray:
    model = ModelFile.read(path)
    return class_layer_parameters(model.tree, locate_embedding(model.tree))[0]


def test_train_writes_a_model_that_classifies_like_the_report(flowers_small, tmp_path):
    result = train(flowers_small, tmp_path / "out", options=TrainOptions(**QUIET))
    model = ModelFile.read(result.model_path)
    assert model.kind is ModelKind.CLASSIFIER and model.label_list(3) == sorted(p.name for p in flowers_small.iterdir())
    report = json.loads(result.report_path.read_text())
    assert report["solver"] == "tuned" and report["refit_on_all_photos"] and 1e-6 <= report["reg"] <= 1.0
    assert report["train_images"] + report["val_images"] == 36 and "refit on every photo" in result.headline
    assert result.labels_path.read_text().splitlines()[0].startswith("0 ")
    assert Interpreter(model).output_size == 3 and report["val_accuracy"] >= 0.5


def test_early_stopping_stops_early_and_without_it_runs_every_iteration(flowers_small, tmp_path):
    stopped = train(flowers_small, tmp_path / "a", options=TrainOptions(solver="sgd", num_iter=3000, early_stopping=True, **QUIET)).report
    full = train(flowers_small, tmp_path / "b", options=TrainOptions(solver="sgd", num_iter=3000, **QUIET)).report
    assert stopped["stopped_early"] and stopped["iterations"] < 3000
    assert not full["stopped_early"] and full["iterations"] == 3000


@pytest.mark.parametrize("solver", ["tuned", "sgd"])
def test_balanced_class_weights_change_the_layer(flowers_imbalanced, tmp_path, solver):
    plain = train(flowers_imbalanced, tmp_path / "a", options=TrainOptions(solver=solver, num_iter=200, **QUIET))
    balanced = train(flowers_imbalanced, tmp_path / "b", options=TrainOptions(solver=solver, num_iter=200, class_weight="balanced",
                                                                             **QUIET))
    w_plain, w_balanced = _weights(plain.model_path), _weights(balanced.model_path)
    assert w_plain.shape == w_balanced.shape and np.abs(w_plain - w_balanced).max() > 1e-3
    assert balanced.report["settings"]["class_weight"] == "balanced"


def test_epochs_set_the_iterations_and_the_ratio_the_split(flowers_small, tmp_path):
    report = train(flowers_small, tmp_path / "a", options=TrainOptions(solver="sgd", epochs=4, batch_size=10, val_ratio=0.25, **QUIET)).report
    assert report["val_images"] == 9 and report["train_images"] == 27
    assert report["iterations"] == int(np.ceil(4 * 27 / 10))


def test_second_run_reads_every_embedding_from_the_cache_and_no_cache_reads_none(flowers_small, tmp_path):
    first = train(flowers_small, tmp_path / "a", options=TrainOptions(num_iter=10, **QUIET)).report
    second = train(flowers_small, tmp_path / "b", options=TrainOptions(num_iter=10, **QUIET)).report
    uncached = train(flowers_small, tmp_path / "c", options=TrainOptions(num_iter=10, use_cache=False, **QUIET)).report
    assert first["embeddings_from_cache"] == 0 and second["embeddings_from_cache"] == 36 and uncached["embeddings_from_cache"] == 0


def test_unreadable_images_are_skipped_or_stop_the_run_with_strict(flowers_small, tmp_path):
    victim = next((flowers_small / sorted(p.name for p in flowers_small.iterdir())[0]).iterdir())
    victim.unlink()
    victim.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.warns(UserWarning, match="skipped unreadable image"):
        report = train(flowers_small, tmp_path / "a", options=TrainOptions(num_iter=10, **QUIET)).report
    assert report["unreadable"] == [str(victim)] and report["train_images"] + report["val_images"] == 35
    with pytest.raises(ImageError, match=victim.name):
        train(flowers_small, tmp_path / "b", options=TrainOptions(num_iter=10, strict=True, **QUIET))
    assert not (tmp_path / "b").exists()


def test_a_classifier_is_cut_and_trained_on(flowers_small, tmp_path, model_file):
    lines: list[str] = []
    result = train(flowers_small, tmp_path / "a", extractor=model_file("mobilenet_v1_0.25_128_quant.tflite"),
                   options=TrainOptions(num_iter=50, **QUIET), log=lines.append)
    assert any("is a classifier" in line for line in lines)
    assert Interpreter(ModelFile.read(result.model_path)).output_size == 3


def test_epochs_count_passes_even_when_the_batch_is_larger_than_the_data():
    assert TrainOptions(epochs=30, batch_size=100).iterations(16) == 30  # was 5: 30 * 16 / 100
    assert TrainOptions(epochs=2, batch_size=10).iterations(100) == 20
    assert TrainOptions().iterations(16) == 500 and TrainOptions(num_iter=7).iterations(16) == 7


def test_tuned_solver_without_held_out_photos_reports_cross_validated_accuracy(flowers_small, tmp_path):
    result = train(flowers_small, tmp_path / "a", options=TrainOptions(val_ratio=0, **QUIET))
    report = result.report
    assert report["val_images"] == 0 and not report["refit_on_all_photos"] and 0.5 <= report["cv_accuracy"] <= 1.0
    assert f"cross-validated accuracy {report['cv_accuracy']:.3f}" in result.headline and report["confusion_png"] is None


def test_an_unknown_solver_is_refused_before_anything_is_embedded(flowers_small, tmp_path):
    from lastlayer.errors import TrainingError

    lines: list[str] = []
    with pytest.raises(TrainingError, match="solver must be one of 'tuned', 'sgd', got 'adam'"):
        train(flowers_small, tmp_path / "a", options=TrainOptions(solver="adam", **QUIET), log=lines.append)
    assert lines == [] and not (tmp_path / "a").exists()


NEAREST_MEAN = """
import numpy as np

from lastlayer.learn.base import FitReport, Params
from lastlayer.learn.linear import LinearSoftmaxHead


class NearestMeanHead(Params, LinearSoftmaxHead):
    def __init__(self, *, gain=10.0, num_classes=None, seed=None):
        self.gain = gain
        self.num_classes = num_classes
        self.seed = seed
        self.W_ = None

    def fit(self, X, y, X_val=None, y_val=None, *, log=None):
        X = np.asarray(X, np.float32)
        self.n_features_in_, self.num_classes_ = X.shape[1], self.num_classes
        means = np.stack([X[y == c].mean(axis=0) for c in range(self.num_classes_)])
        self.W_ = (self.gain * means / np.linalg.norm(means, axis=1, keepdims=True)).T.astype(np.float32)
        self.b_ = np.zeros(self.num_classes_, np.float32)
        self.finish_fit(X, None)
        (log or print)(f"nearest mean of {len(X)} examples")
        return self

    def fit_report(self):
        return FitReport(iterations=1)
"""


def test_a_new_learner_is_one_module_and_one_registration(flowers_small, tmp_path, monkeypatch):
    from lastlayer.learn import registry

    (tmp_path / "nearest_mean.py").write_text(NEAREST_MEAN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "SOLVERS", dict(registry.SOLVERS))
    registry.register_solver(registry.Solver("nearest", "nearest_mean:NearestMeanHead", "nearest class mean"))
    lines: list[str] = []
    result = train(flowers_small, tmp_path / "out", options=TrainOptions(solver="nearest", **QUIET), log=lines.append)
    report = result.report
    assert report["solver"] == "nearest" and report["iterations"] == 1 and report["reg"] is None
    assert not report["refit_on_all_photos"] and report["val_accuracy"] >= 0.5
    assert f"nearest mean of {report['train_images']} examples" in lines
    assert Interpreter(ModelFile.read(result.model_path)).output_size == 3
