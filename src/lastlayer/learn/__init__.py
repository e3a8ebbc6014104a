"""Learners for the last layer: NumPy math only, no file formats.

Each exports a :class:`~lastlayer.layer.DenseLayer`; :mod:`lastlayer.model.export` writes it into a model.
"""
