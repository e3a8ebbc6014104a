"""Save the frames of one class from a live loop into a dataset folder (``DIR/<class>/frame_NNNNNN.jpg``)."""

from __future__ import annotations

import os
from typing import Sequence

from lastlayer.errors import NotFoundError
from lastlayer.files.outputs import atomic_write_bytes, check_output_dir, ensure_output_dir


class FrameRecorder:
    """Keeps the frames whose smoothed top class is ``class_name``; each file appears whole or not at all.

    ``classes``: the classes the predictions can name; a ``class_name`` not among them would record nothing,
    so it is refused (:class:`~lastlayer.errors.NotFoundError`), as is a folder that cannot be written. Nothing
    is created before the first frame is saved.
    """

    def __init__(self, folder: str | os.PathLike[str], class_name: str, classes: Sequence[str] | None = None) -> None:
        if classes is not None and class_name not in classes:
            names = list(classes)
            known = ", ".join(repr(name) for name in names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "") or "none yet"
            raise NotFoundError(f"there is no class {class_name!r} to record; the classes are: {known}", subject="record_class")
        self.folder = check_output_dir(folder)
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
