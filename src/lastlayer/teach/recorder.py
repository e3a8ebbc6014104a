"""Save the frames of one class from a live loop into a dataset folder (``DIR/<class>/frame_NNNNNN.jpg``)."""

from __future__ import annotations

import os
from pathlib import Path

from lastlayer.files.outputs import atomic_write_bytes, ensure_output_dir


class FrameRecorder:
    """Keeps the frames whose smoothed top class is ``class_name``; each file appears whole or not at all."""

    def __init__(self, folder: str | os.PathLike[str], class_name: str) -> None:
        self.folder = Path(folder)
        self.class_name = class_name
        self.saved = 0

    def offer(self, state: object) -> bool:
        """Save ``state.frame`` if its top class is the recorded one; returns whether it was saved."""
        from lastlayer.images.decode import encode_jpeg

        top = state.top
        if top is None or top[0] != self.class_name:
            return False
        target = ensure_output_dir(self.folder / self.class_name)
        atomic_write_bytes(target / f"frame_{state.frame.index:06d}.jpg", encode_jpeg(state.frame.pixels, quality=92))
        self.saved += 1
        return True
