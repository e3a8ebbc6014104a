"""Learners for the last layer: NumPy math plus a call into :mod:`lastlayer.model` to write the head."""

from lastlayer.learn.softmax import SoftmaxRegression

__all__ = ["SoftmaxRegression"]
