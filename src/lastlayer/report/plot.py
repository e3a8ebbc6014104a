"""Confusion matrices and unknown-threshold curves as PNG, drawn with Pillow (no plotting library needed).

Up to :data:`MAX_CLASSES` classes every cell shows its count. Beyond that the picture shows the
classes most often confused (rows and columns with the most off-diagonal counts), with a note
saying so, so drawing time and memory stay bounded however many classes a model has.
Cell colours follow the share of the row (recall), and the count is drawn in black or white,
whichever contrasts with the cell.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lastlayer.files.outputs import atomic_write_bytes

MAX_CLASSES = 30
CELL = 34
_BLUE = np.array([8, 48, 107], dtype=np.float64)
_WHITE = np.array([247, 251, 255], dtype=np.float64)


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        return ImageFont.load_default()


def most_confused(matrix: np.ndarray, limit: int = MAX_CLASSES) -> np.ndarray:
    """Indices of the ``limit`` classes with the most off-diagonal counts (as row or column), in their order."""
    rows = min(matrix.shape)
    errors = matrix[:rows, :rows].sum(axis=0) + matrix[:rows, :rows].sum(axis=1) - 2 * np.diag(matrix[:rows, :rows])
    if rows <= limit:
        return np.arange(rows)
    chosen = np.argpartition(-errors, limit - 1)[:limit]
    return np.sort(chosen)


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _panel(matrix: np.ndarray, rows: Sequence[str], columns: Sequence[str], title: str, note: str | None) -> Any:
    """One confusion matrix as a Pillow image."""
    from PIL import Image, ImageDraw

    font, small = _font(13), _font(11)
    label_width = 8 + 7 * max([len(r) for r in rows] + [4])
    top = 40 + 7 * max([len(c) for c in columns] + [9]) + (18 if note else 0)
    footer = "predicted ->  (rows: true class; colour: share of the row)"
    width = max(label_width + CELL * len(columns) + 20, label_width + 6 * len(footer) + 20, 8 * len(title) + 20)
    height = top + CELL * len(rows) + 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 8), title, fill="black", font=font)
    if note:
        draw.text((10, 26), note, fill=(90, 90, 90), font=small)
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=np.float64), where=totals > 0)
    for j, name in enumerate(columns):  # column labels, written upwards
        label = Image.new("RGB", (7 * len(name) + 8, 16), "white")
        ImageDraw.Draw(label).text((2, 1), name, fill="black", font=small)
        rotated = label.rotate(90, expand=True)
        image.paste(rotated, (label_width + j * CELL + (CELL - rotated.width) // 2, top - rotated.height - 4))
    for i, name in enumerate(rows):
        y = top + i * CELL
        draw.text((6, y + CELL // 2 - 7), name, fill="black", font=small)
        for j in range(len(columns)):
            colour = _WHITE + (_BLUE - _WHITE) * shares[i, j]
            x = label_width + j * CELL
            draw.rectangle([x, y, x + CELL - 1, y + CELL - 1], fill=tuple(int(c) for c in colour), outline=(220, 220, 220))
            count = int(matrix[i, j])
            if count:
                luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
                text = str(count)
                draw.text((x + CELL // 2 - 3.5 * len(text), y + CELL // 2 - 7), text, fill="white" if luminance < 140 else "black",
                          font=small)
    draw.text((label_width, top + CELL * len(rows) + 8), footer, fill=(90, 90, 90), font=small)
    return image


def confusion_image(report: dict[str, Any], title: str) -> Any:
    """The confusion matrix of a :func:`lastlayer.report.metrics.classification_report` as a Pillow image."""
    matrix = np.asarray(report["confusion_matrix"], dtype=np.int64)
    rows, columns = list(report["classes"]), list(report["columns"])
    note = None
    if len(rows) > MAX_CLASSES:
        keep = most_confused(matrix)
        extra = list(range(len(rows), len(columns)))  # the "(other class)" column stays
        matrix = matrix[np.ix_(keep, list(keep) + extra)]
        note = f"the {len(keep)} most confused of {len(rows)} classes"
        rows, columns = [rows[i] for i in keep], [columns[i] for i in keep] + [columns[i] for i in extra]
    return _panel(matrix, [_shorten(r, 24) for r in rows], [_shorten(c, 24) for c in columns], title, note)


def save_confusion_png(reports: dict[str, Any] | Sequence[dict[str, Any]], path: str | Path,
                       titles: str | Sequence[str] = "confusion matrix") -> Path | None:
    """Draw one confusion matrix, or several side by side (e.g. a comparison), into a PNG; ``None`` if there is no data."""
    from PIL import Image

    sections = [reports] if isinstance(reports, dict) else list(reports)
    names = [titles] if isinstance(titles, str) else list(titles)
    panels = [confusion_image(r, t) for r, t in zip(sections, names) if r.get("confusion_matrix")]
    if not panels:
        return None
    canvas = Image.new("RGB", (sum(p.width for p in panels) + 10 * (len(panels) - 1), max(p.height for p in panels)), "white")
    x = 0
    for panel in panels:
        canvas.paste(panel, (x, 0))
        x += panel.width + 10
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", optimize=False)
    return atomic_write_bytes(path, buffer.getvalue())


_CURVE_COLOURS = {"known_accuracy": (31, 119, 180), "known_rejected": (150, 150, 150), "other_rejected": (214, 96, 39)}
_CURVE_NAMES = {"known_accuracy": "known-class accuracy (accepted and right)", "known_rejected": "known photos answered unknown",
                "other_rejected": "other photos rejected"}


def threshold_curve_image(curve: dict[str, Any], threshold: float, title: str) -> Any:
    """What an unknown threshold trades: each of the curve's lines (0..1) against the threshold, the one in use marked.

    ``curve`` holds ``thresholds`` and, per threshold, ``known_accuracy``, ``known_rejected`` and
    optionally ``other_rejected`` (see :func:`lastlayer.report.metrics.rejection_curve`).
    """
    from PIL import Image, ImageDraw

    font, small = _font(13), _font(11)
    width, height, left, top, plot_w, plot_h = 560, 340, 46, 34, 490, 200
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((10, 8), title, fill="black", font=font)
    xs = np.asarray(curve["thresholds"], dtype=np.float64)
    low, high = float(xs.min()), float(xs.max())
    span = high - low if high > low else 1.0

    def point(x: float, y: float) -> tuple[float, float]:
        return left + (x - low) / span * plot_w, top + (1.0 - y) * plot_h

    draw.rectangle([left, top, left + plot_w, top + plot_h], outline=(120, 120, 120))
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + (1.0 - tick) * plot_h
        draw.line([left - 4, y, left, y], fill=(120, 120, 120))
        draw.text((8, y - 7), f"{tick:.2f}", fill=(90, 90, 90), font=small)
    for x in np.linspace(low, high, 5):
        px = point(float(x), 0.0)[0]
        draw.line([px, top + plot_h, px, top + plot_h + 4], fill=(120, 120, 120))
        draw.text((px - 14, top + plot_h + 6), f"{x:.2f}", fill=(90, 90, 90), font=small)
    draw.text((left + plot_w // 2 - 110, top + plot_h + 22), "unknown below this similarity (threshold)", fill=(90, 90, 90), font=small)
    if low <= threshold <= high:
        px = point(threshold, 0.0)[0]
        draw.line([px, top, px, top + plot_h], fill=(200, 30, 30), width=2)
        draw.text((min(px + 4, left + plot_w - 90), top + 2), f"in use: {threshold:.3f}", fill=(200, 30, 30), font=small)
    legend_y = top + plot_h + 44
    for key, colour in _CURVE_COLOURS.items():
        values = curve.get(key)
        if values is None:
            continue
        draw.line([point(float(x), float(v)) for x, v in zip(xs, values)], fill=colour, width=2)
        draw.line([left, legend_y + 7, left + 24, legend_y + 7], fill=colour, width=3)
        draw.text((left + 30, legend_y), _CURVE_NAMES[key], fill="black", font=small)
        legend_y += 18
    return image


def threshold_curve_png(curve: dict[str, Any], threshold: float, title: str = "unknown threshold") -> bytes:
    """:func:`threshold_curve_image` as PNG bytes."""
    buffer = io.BytesIO()
    threshold_curve_image(curve, threshold, title).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
