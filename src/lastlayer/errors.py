"""Exceptions raised by lastlayer.

Every error carries a one-line message that names the file involved and says how to fix it, in
words that fit a Python caller as well as the command line: messages never name a command-line
flag. An error may say which input it is about (``subject``: ``"model"``, ``"labels"``,
``"data"``, ``"tensor"``, ``"output"``, ...); the CLI turns that into the flag of the running
command. The classes also derive from the built-in exception PyCoral raised in the same
situation, so ported ``except ValueError`` code still works.

A new kind is one subclass here (of :class:`LastLayerError` and the built-in type a caller would
catch). The command line exits 1 for every kind; the web app answers the status of its row in
:data:`lastlayer.serve.protocol.STATUS_BY_KIND` (400 without one), so a kind that needs another status
is one row there.
"""

from __future__ import annotations


class LastLayerError(Exception):
    """Base class of every error lastlayer raises on purpose.

    Args:
        message: one line naming the file and the fix.
        subject: which input the error is about (see the module docstring), or ``None``.
    """

    def __init__(self, message: str = "", *, subject: str | None = None) -> None:
        super().__init__(message)
        self.subject = subject


class ModelError(LastLayerError, ValueError):
    """A file is not a usable TensorFlow Lite model (missing, truncated, not TFLite, wrong shape)."""


class ModelNotFoundError(ModelError, FileNotFoundError):
    """A model name could not be resolved to a local file, and could not be downloaded."""


class LabelFileError(LastLayerError, ValueError):
    """A label file is missing or cannot be read."""


class ImageError(LastLayerError, ValueError):
    """An image file cannot be read or decoded."""


class DatasetError(LastLayerError, ValueError):
    """A dataset folder or list is unusable (no classes, empty class, too few images)."""


class EdgeTpuError(LastLayerError, RuntimeError):
    """A model needs the Edge TPU, but the Edge TPU runtime or device is not available."""


class InferenceError(LastLayerError, RuntimeError):
    """The interpreter failed while preparing or running a model."""


class OutputError(LastLayerError, OSError):
    """An output file or folder cannot be written."""


class TrainingError(LastLayerError, ValueError, RuntimeError):
    """Training data or parameters are invalid (label out of range, NaN, wrong feature size).

    Also a RuntimeError, which PyCoral raised for the same imprinting mistakes.
    """


class NotFittedError(TrainingError, AttributeError):
    """A learner was asked to predict or export before ``fit`` (scikit-learn's name and bases)."""


class NotFoundError(LastLayerError, LookupError):
    """A class or example that does not exist (any more: another process may have deleted it)."""


class ConflictError(LastLayerError, ValueError):
    """A change that contradicts the state as it is now: a class name taken (by this or another process),
    a class that came with the model and takes no examples, or examples that changed during a fine-tune."""


class BusyError(LastLayerError, TimeoutError):
    """Another process held the teaching state's write lock for longer than the busy timeout; retry."""


class StorageError(LastLayerError, OSError):
    """A change could not be stored: the disk is full, the state turned read-only, or its database was
    deleted or replaced while running. Nothing of the change was stored."""
