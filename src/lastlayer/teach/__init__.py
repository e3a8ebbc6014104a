"""Live teaching: a teaching session over a state folder, the live loop that predicts frames, recording.

Frames come from :mod:`lastlayer.sources` (:func:`~lastlayer.sources.open_source`). Import the
submodules directly: this package imports nothing heavy on its own.
"""
