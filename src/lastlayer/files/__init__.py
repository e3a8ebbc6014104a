"""Where lastlayer meets the file system, before any pixel is decoded.

``datasets`` (a folder of class sub-folders or a CSV as paths + labels, splits, shots; which file
names are images), ``outputs`` (files that appear all at once or not at all: :class:`OutputSet`,
atomic writes, recovery after a kill) and ``checkpoints`` (a learner's training state as a file).
Import the submodules directly: this package imports nothing on its own.
"""
