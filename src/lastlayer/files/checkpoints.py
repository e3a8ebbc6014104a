"""Checkpoint files of a learner's training state: a ``.npz`` of its arrays and one JSON entry, written atomically.

The learner says what its state is (``training_state()`` / ``from_training_state()``, e.g.
:class:`~lastlayer.learn.softmax.SoftmaxRegression`); this module alone knows the file format, so
learning code stays free of files. A checkpoint lets training continue where it stopped, with the
same random draws as an uninterrupted run.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any, Protocol, TypeVar, Union

import numpy as np

from lastlayer.errors import TrainingError
from lastlayer.files.outputs import atomic_write_bytes

PathLike = Union[str, "os.PathLike[str]"]
_STATE = "state"  # the array holding the JSON state (the other arrays are the learner's own)
T = TypeVar("T", bound="Checkpointable")


class Checkpointable(Protocol):
    def training_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]: ...

    @classmethod
    def from_training_state(cls: type[T], arrays: dict[str, np.ndarray], state: dict[str, Any]) -> T: ...


def save_checkpoint(learner: Checkpointable, path: PathLike) -> Path:
    """Write ``learner``'s training state to ``path`` (all at once: never a half-written file)."""
    arrays, state = learner.training_state()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, **{_STATE: np.array(json.dumps(state))})
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: PathLike, learner_class: type[T]) -> T:
    """The ``learner_class`` instance saved at ``path`` by :func:`save_checkpoint`, or a one-line :class:`TrainingError`."""
    try:
        with np.load(path) as stored:
            state = json.loads(str(stored[_STATE]))
            arrays = {name: stored[name] for name in stored.files if name != _STATE}
        return learner_class.from_training_state(arrays, state)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise TrainingError(f"cannot load checkpoint {path}: {exc}; it must be a file written by "
                            f"{learner_class.__name__}.save") from None
