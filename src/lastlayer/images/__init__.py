"""Pixels: decoding image files and uploads into the RGB arrays a model wants, and rendering synthetic ones.

``decode`` (the one decoder: EXIF orientation, transparency, modes, size limits, resizing the same
for training and inference, JPEG encoding for thumbnails and streams) and ``render`` (the one
renderer of synthetic machine parts and defects, as images, folders and videos, for the tests, the
benchmarks and ``lastlayer demo``). Import the submodules directly: this package imports nothing on
its own.
"""
