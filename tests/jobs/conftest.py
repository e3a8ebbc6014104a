"""Small real datasets for the job tests: symlinks into ../shared/datasets/flowers (never copies)."""

from __future__ import annotations

from pathlib import Path

import pytest


def link_dataset(source: Path, target: Path, per_class: dict[str, int]) -> Path:
    """``target/<class>/`` with the first ``n`` images of each class of ``source``, as symlinks."""
    for name, count in per_class.items():
        (target / name).mkdir(parents=True)
        for image in sorted((source / name).iterdir())[:count]:
            (target / name / image.name).symlink_to(image)
    return target


@pytest.fixture
def flowers_small(datasets_dir: Path, tmp_path: Path) -> Path:
    """3 flower classes x 12 photos."""
    source = datasets_dir / "flowers"
    classes = sorted(p.name for p in source.iterdir() if p.is_dir())[:3]
    return link_dataset(source, tmp_path / "flowers_small", {name: 12 for name in classes})


@pytest.fixture
def flowers_imbalanced(datasets_dir: Path, tmp_path: Path) -> Path:
    """3 flower classes with 30, 6 and 6 photos."""
    source = datasets_dir / "flowers"
    classes = sorted(p.name for p in source.iterdir() if p.is_dir())[:3]
    return link_dataset(source, tmp_path / "flowers_imbalanced", dict(zip(classes, (30, 6, 6))))


@pytest.fixture
def few_photos(datasets_dir: Path, tmp_path: Path):
    """``few_photos(n)`` -> 3 flower classes with ``n`` photos each."""
    source = datasets_dir / "flowers"
    classes = sorted(p.name for p in source.iterdir() if p.is_dir())[:3]
    return lambda n: link_dataset(source, tmp_path / f"few{n}", {name: n for name in classes})
