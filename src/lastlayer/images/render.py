"""Deterministic synthetic camera scenes: lastlayer's one renderer of machine parts, for tests and ``lastlayer demo``.

A fixed camera looks down at a plain work surface; each frame shows one part (a brass ``gear``, a
steel ``washer``, a blue ``bracket`` or a dark ``nut``), one with a defect (``gear_chipped``: a
wedge broken off the rim; ``washer_scratched``: a scratch across it; ``bracket_missing_hole``: one
of its two holes not drilled) or nothing (``empty``), with a small random jitter in position,
size, rotation and light, plus sensor noise. Solid colours (``red``, ``green``, ``blue``,
``white``, ``black``, ``gray``) give exact flat frames, e.g. to check channel order.

The same ``(kind, index, size, seed)`` always renders the same pixels. :func:`write_video` writes
segments of frames to a video with OpenCV: ``mp4v`` in .mp4/.m4v/.mov and ``MJPG`` in .avi/.mkv,
both available in the stock ``opencv-python-headless`` wheels (H.264 is not).
:func:`write_image_folder` writes numbered PNG or JPEG frames with Pillow only.
"""

from __future__ import annotations

import functools
import math
import os
import zlib
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from lastlayer.errors import OutputError

OBJECT_KINDS = ("gear", "washer", "bracket", "nut")
DEFECT_KINDS = ("gear_chipped", "washer_scratched", "bracket_missing_hole")
_PART_OF = {"gear_chipped": "gear", "washer_scratched": "washer", "bracket_missing_hole": "bracket"}
SOLID_COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255),
    "white": (255, 255, 255), "black": (0, 0, 0), "gray": (128, 128, 128),
}
KINDS = OBJECT_KINDS + DEFECT_KINDS + ("empty",) + tuple(SOLID_COLOURS)
VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
Segment = Tuple[str, int]  # (kind, number of frames)
Size = Tuple[int, int]  # (width, height)

_COLOURS = {"gear": (196, 156, 64), "washer": (186, 190, 198), "bracket": (52, 112, 214), "nut": (112, 112, 118)}
_BASE_ANGLE = {"gear": 0.0, "washer": 0.0, "bracket": 20.0, "nut": 10.0}
_SUPERSAMPLE = 2


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")


@functools.lru_cache(maxsize=8)
def _grid(size: Size) -> Tuple[np.ndarray, np.ndarray]:
    width, height = size
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ys.setflags(write=False)
    xs.setflags(write=False)
    return ys, xs


@functools.lru_cache(maxsize=8)
def _surface(size: Size, seed: int) -> np.ndarray:
    """The scene's fixed work surface: a dark, slightly textured, unevenly lit plane (float32 HxWx3)."""
    width, height = size
    rng = np.random.default_rng([seed, 0x5CE4E])
    ys, xs = _grid(size)
    angle = rng.uniform(0, 2 * math.pi)
    gradient = ((xs / width - 0.5) * math.cos(angle) + (ys / height - 0.5) * math.sin(angle)) * rng.uniform(10, 25)
    texture = np.asarray(Image.fromarray(rng.normal(128, 40, (height, width)).clip(0, 255).astype(np.uint8))
                         .filter(ImageFilter.GaussianBlur(1.5)), dtype=np.float32) - 128
    tone = np.array([58, 64, 72], dtype=np.float32) * rng.uniform(0.9, 1.1)
    surface = tone + (gradient + texture * 0.25)[..., None]
    surface.setflags(write=False)
    return surface


def _rotate(points: Sequence[Tuple[float, float]], cx: float, cy: float, angle: float) -> List[Tuple[float, float]]:
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in points]


def _circle(draw: ImageDraw.ImageDraw, x: float, y: float, r: float, fill: int) -> None:
    draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)


def _draw_part(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, angle: float,
               rng: np.random.Generator) -> None:
    """Draw the part's silhouette (255) with its holes and defects (0), centred at (cx, cy), radius about r."""
    part = _PART_OF.get(kind, kind)
    if part == "gear":
        teeth = 10
        outline = [(r * (1.2 if (i // 2) % 2 else 0.95) * math.cos(2 * math.pi * i / (teeth * 4)),
                    r * (1.2 if (i // 2) % 2 else 0.95) * math.sin(2 * math.pi * i / (teeth * 4))) for i in range(teeth * 4)]
        draw.polygon(_rotate(outline, cx, cy, angle), fill=255)
        _circle(draw, cx, cy, r * 0.28, 0)
        if kind == "gear_chipped":  # a wedge broken off the rim
            a, width = rng.uniform(0, 2 * math.pi), rng.uniform(0.35, 0.55)
            draw.polygon([(cx + r * 0.55 * math.cos(a), cy + r * 0.55 * math.sin(a)),
                          (cx + r * 1.4 * math.cos(a - width), cy + r * 1.4 * math.sin(a - width)),
                          (cx + r * 1.4 * math.cos(a + width), cy + r * 1.4 * math.sin(a + width))], fill=0)
    elif part == "washer":
        _circle(draw, cx, cy, r, 255)
        _circle(draw, cx, cy, r * 0.5, 0)
        if kind == "washer_scratched":  # a scratch across the ring, off the centre
            a, offset = rng.uniform(0, math.pi), rng.uniform(0.6, 0.8) * r * rng.choice([-1, 1])
            x0, y0 = cx + offset * math.sin(a), cy - offset * math.cos(a)
            reach = r * 0.9
            draw.line([(x0 - reach * math.cos(a), y0 - reach * math.sin(a)), (x0 + reach * math.cos(a), y0 + reach * math.sin(a))],
                      fill=0, width=max(2, int(r * 0.07)))
    elif part == "nut":
        hexagon = [(r * math.cos(math.pi / 3 * i), r * math.sin(math.pi / 3 * i)) for i in range(6)]
        draw.polygon(_rotate(hexagon, cx, cy, angle), fill=255)
        _circle(draw, cx, cy, r * 0.42, 0)
    else:  # bracket: an L with a hole in each arm
        t = r * 0.55
        outline = [(-r, -r * 1.1), (-r + t, -r * 1.1), (-r + t, r - t), (r * 1.1, r - t), (r * 1.1, r), (-r, r)]
        draw.polygon(_rotate(outline, cx, cy, angle), fill=255)
        holes = [(-r + t / 2, -r * 0.45), (r * 0.5, r - t / 2)][: 1 if kind == "bracket_missing_hole" else 2]
        for x, y in _rotate(holes, cx, cy, angle):
            _circle(draw, x, y, t * 0.22, 0)


def _part_alpha(kind: str, size: Size, rng: np.random.Generator) -> Tuple[np.ndarray, float, float, float]:
    """Antialiased coverage (float32 HxW in 0..1) of a jittered part, and its centre and radius."""
    width, height = size
    s = _SUPERSAMPLE
    cx = width / 2 + rng.uniform(-0.08, 0.08) * width
    cy = height / 2 + rng.uniform(-0.08, 0.08) * height
    r = min(width, height) * 0.27 * rng.uniform(0.92, 1.08)
    angle = math.radians(_BASE_ANGLE[_PART_OF.get(kind, kind)] + rng.uniform(-15, 15))
    mask = Image.new("L", (width * s, height * s), 0)
    _draw_part(ImageDraw.Draw(mask), kind, cx * s, cy * s, r * s, angle, rng)
    mask = mask.resize(size, Image.Resampling.BOX)
    return np.asarray(mask, dtype=np.float32) / 255.0, cx, cy, r


def render_frame(kind: str, index: int, size: Size = (320, 240), seed: int = 0) -> np.ndarray:
    """One HxWx3 uint8 RGB frame of ``kind`` (see :data:`KINDS`); deterministic in all arguments.

    ``index`` picks the per-frame jitter (position, size, rotation, light, noise); ``seed`` the
    scene (the work surface is the same for every kind and frame of one seed).
    """
    _check_kind(kind)
    width, height = size
    if kind in SOLID_COLOURS:
        return np.full((height, width, 3), SOLID_COLOURS[kind], dtype=np.uint8)
    rng = np.random.default_rng([seed, zlib.crc32(kind.encode()), index])
    image = _surface((width, height), seed).copy()
    if kind in OBJECT_KINDS or kind in DEFECT_KINDS:
        alpha, cx, cy, r = _part_alpha(kind, (width, height), rng)
        shift = max(2, int(r * 0.08))
        shadow = np.asarray(Image.fromarray((alpha * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(shift)),
                            dtype=np.float32) / 255.0
        shadow = np.roll(shadow, (shift, shift), axis=(0, 1))
        image *= (1 - 0.5 * shadow)[..., None]
        ys, xs = _grid((width, height))
        light_angle = rng.uniform(0, 2 * math.pi)
        shade = 1 + 0.22 * ((xs - cx) * math.cos(light_angle) + (ys - cy) * math.sin(light_angle)) / r
        part = np.asarray(_COLOURS[_PART_OF.get(kind, kind)], dtype=np.float32) * np.clip(shade, 0.6, 1.3)[..., None]
        image = image * (1 - alpha[..., None]) + part * alpha[..., None]
    image = image * rng.uniform(0.9, 1.1) + rng.standard_normal(image.shape, dtype=np.float32) * 2.5
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def segment_labels(segments: Sequence[Segment]) -> List[str]:
    """The kind of every frame, in order: ``[("gear", 2), ("nut", 1)]`` -> ``["gear", "gear", "nut"]``."""
    return [kind for kind, count in segments for _ in range(count)]


def render_segments(segments: Sequence[Segment], size: Size = (320, 240), seed: int = 0) -> Iterator[Tuple[str, np.ndarray]]:
    """Yield ``(kind, frame)`` for every frame of the segments; frame ``i`` uses jitter ``index=i``."""
    for kind, _ in segments:
        _check_kind(kind)
    for index, kind in enumerate(segment_labels(segments)):
        yield kind, render_frame(kind, index, size, seed)


def write_video(
    path: str | os.PathLike[str],
    segments: Sequence[Segment],
    fps: float = 15,
    size: Size = (320, 240),
    seed: int = 0,
) -> Path:
    """Write the segments' frames to a video file with OpenCV; return its path.

    The container follows the extension: .mp4/.m4v/.mov use the ``mp4v`` codec (MPEG-4 part 2),
    .avi/.mkv use ``MJPG`` (Motion JPEG); both come with ``opencv-python-headless``.
    """
    path = Path(path)
    codec = VIDEO_CODECS.get(path.suffix.lower())
    if codec is None:
        raise OutputError(f"cannot write video {path}: use one of {', '.join(VIDEO_CODECS)}")
    try:
        import cv2
    except ImportError:
        raise OutputError(f"writing video {path} needs OpenCV: pip install opencv-python-headless") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), float(fps), tuple(size))
    if not writer.isOpened():
        raise OutputError(f"OpenCV cannot write {path} with codec {codec}; check the folder is writable or use .avi")
    try:
        for _, frame in render_segments(segments, size, seed):
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


def write_image_folder(
    folder: str | os.PathLike[str],
    segments: Sequence[Segment],
    size: Size = (320, 240),
    seed: int = 0,
    extension: str = ".png",
    prefix: str = "frame_",
) -> List[Path]:
    """Write the segments' frames as numbered images (``frame_00000.png``...) into ``folder``; return the paths.

    ``extension`` is ``.png`` (lossless) or ``.jpg``. Needs only Pillow.
    """
    extension = extension if extension.startswith(".") else "." + extension
    if extension.lower() not in (".png", ".jpg", ".jpeg"):
        raise OutputError(f"cannot write frames as {extension}: use .png or .jpg")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    options = {} if extension.lower() == ".png" else {"quality": 92}
    paths = []
    for index, (_, frame) in enumerate(render_segments(segments, size, seed)):
        path = folder / f"{prefix}{index:05d}{extension}"
        Image.fromarray(frame).save(path, **options)
        paths.append(path)
    return paths
