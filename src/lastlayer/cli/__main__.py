"""``python -m lastlayer.cli``: the same as the ``lastlayer`` command."""

from lastlayer.cli import entry_point

entry_point()
