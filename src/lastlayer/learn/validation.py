"""Input checks shared by the learners: clear errors instead of NaNs or out-of-bounds writes."""

from __future__ import annotations

import numpy as np

from lastlayer.errors import NotFittedError, TrainingError


def check_features(X: np.ndarray, feature_dim: int | None = None, name: str = "embeddings") -> np.ndarray:
    """Return ``X`` as a 2-D float32 array; reject NaN/inf, integer (still quantized) data and a wrong feature size."""
    raw = np.asarray(X)
    if raw.dtype.kind in "ui":
        raise TrainingError(f"{name} are {raw.dtype} values, i.e. still quantized; dequantize them first "
                            "(scale * (q - zero_point), as Interpreter.output or the PyCoral adapter classify.get_scores do)")
    array = raw.astype(np.float32, copy=False)
    if array.ndim == 1:
        array = array[np.newaxis]
    if array.ndim != 2 or array.shape[0] == 0:
        raise TrainingError(f"{name} must be a non-empty 2-D array [samples, features], got shape {list(np.shape(X))}")
    if feature_dim is not None and array.shape[1] != feature_dim:
        raise TrainingError(f"{name} have {array.shape[1]} features but the model expects {feature_dim}; use the matching extractor")
    if not np.isfinite(array).all():
        raise TrainingError(f"{name} contain NaN or infinite values; check the extractor output or the input data")
    return array


def check_labels(y: np.ndarray, count: int, num_classes: int | None = None, name: str = "labels") -> np.ndarray:
    """Return ``y`` as an int64 vector of ``count`` entries in ``[0, num_classes)``."""
    labels = np.asarray(y)
    if labels.ndim != 1 or len(labels) != count:
        raise TrainingError(f"{name} must be a 1-D array with one label per sample ({count}), got shape {list(labels.shape)}")
    if len(labels) and not np.issubdtype(labels.dtype, np.integer) and not np.all(np.equal(np.mod(labels, 1), 0)):
        raise TrainingError(f"{name} must be integer class ids")
    labels = labels.astype(np.int64)
    if len(labels) and labels.min() < 0:
        raise TrainingError(f"{name} contain the negative class id {labels.min()}; class ids start at 0")
    if num_classes is not None and len(labels) and labels.max() >= num_classes:
        raise TrainingError(f"{name} contain class id {labels.max()} but the model has {num_classes} classes (ids 0..{num_classes - 1})")
    return labels


def check_class_id(class_id: int, num_classes: int, *, allow_new: bool = False) -> int:
    """Return ``class_id`` as an int if it names an existing class (or, with ``allow_new``, the next one)."""
    try:
        value = int(class_id)
    except (TypeError, ValueError):
        raise TrainingError(f"class id {class_id!r} is not an integer") from None
    if value != class_id:  # 1.5 is not a class id (1.0 and numpy integers are)
        raise TrainingError(f"class id {class_id!r} is not an integer")
    if value < 0:
        raise TrainingError(f"class id {value} is negative; class ids start at 0")
    limit = num_classes + 1 if allow_new else num_classes
    if value >= limit:
        if allow_new:
            raise TrainingError(f"The class index of a new category is too large! (got {value}, the next new class is {num_classes})")
        raise TrainingError(f"class id {value} does not exist (there are {num_classes} classes, ids 0..{num_classes - 1})")
    return value


def check_fitted(estimator: object, attribute: str) -> None:
    """Raise :class:`NotFittedError` unless ``estimator`` has the learned ``attribute``."""
    if getattr(estimator, attribute, None) is None:
        raise NotFittedError(f"this {type(estimator).__name__} is not fitted yet; call fit() first")
