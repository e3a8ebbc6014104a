"""Frame sources for a live loop: cameras, video files, network streams and image folders.

:func:`open_source` picks the kind from a spec (:mod:`lastlayer.sources.registry`) and returns a
:class:`FrameSource`: a context manager and an iterator of :class:`Frame` objects (RGB uint8 pixels,
an index and a timestamp in seconds)::

    with open_source(0, latest=True) as frames:          # camera 0, always the newest frame
        for frame in frames:
            scores = interpreter.run(resize_array(frame.pixels, interpreter.input_size))

Specs: a camera index (``0``, ``"0"``) or device (``/dev/video0``); a video file (whatever OpenCV's
FFmpeg decodes: .mp4, .avi, .mkv, .mov, .webm...); a stream URL (``rtsp://``, ``http(s)://``
MJPEG...), which reconnects with exponential back-off when it drops; a folder of images, a glob
pattern (``frames/*.jpg``) or one image file. Cameras, files and streams need OpenCV
(``pip install opencv-python-headless``), imported only when such a source is opened; image folders
need only Pillow. A source says what it is: ``live`` (a camera or stream: frames arrive in real time
and may be dropped), ``recorded`` (a file or folder: frames exist beforehand, ``loop`` replays them)
and ``paced`` (frames come at the source's own rate).

Modules: ``base`` (the contract: :class:`Frame`, :class:`FrameSource`, :class:`SourceOptions`, the
errors), ``files`` (image folders and video files), ``live`` (cameras and streams, reconnects),
``opencv`` (what the OpenCV kinds share), ``readers`` (:class:`LatestFrameReader`,
:class:`PrefetchReader`), ``registry`` (:func:`open_source` and the kinds it knows).
"""

from lastlayer.sources.base import (
    DEFAULT_STALL_TIMEOUT,
    Frame,
    FrameSource,
    SourceError,
    SourceOptions,
    SourceWarning,
    redact,
)
from lastlayer.sources.files import ImageFolderSource, VideoFileSource, list_image_files
from lastlayer.sources.live import CameraSource, StreamSource
from lastlayer.sources.opencv import MISSING_OPENCV
from lastlayer.sources.readers import LatestFrameReader, PrefetchReader
from lastlayer.sources.registry import SourceKind, classify_spec, open_source, register_source

__all__ = [
    "DEFAULT_STALL_TIMEOUT",
    "MISSING_OPENCV",
    "CameraSource",
    "Frame",
    "FrameSource",
    "ImageFolderSource",
    "LatestFrameReader",
    "PrefetchReader",
    "SourceError",
    "SourceKind",
    "SourceOptions",
    "SourceWarning",
    "StreamSource",
    "VideoFileSource",
    "classify_spec",
    "list_image_files",
    "open_source",
    "redact",
    "register_source",
]
