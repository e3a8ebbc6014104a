from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lastlayer.errors import ImageError
from lastlayer.images import load_image, load_resized


def test_modes_are_converted_to_rgb(tmp_path):
    Image.new("RGBA", (10, 6), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    Image.new("L", (10, 6), 77).save(tmp_path / "gray.png")
    Image.new("CMYK", (10, 6), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")
    Image.fromarray(np.full((6, 10), 65535 // 2, dtype=np.uint16)).save(tmp_path / "deep.png")
    assert load_image(tmp_path / "clear.png").getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    assert load_image(tmp_path / "gray.png").getpixel((0, 0)) == (77, 77, 77)
    r, g, b = load_image(tmp_path / "cmyk.jpg").getpixel((5, 3))
    assert r > 200 and g < 60 and b < 60
    deep = load_image(tmp_path / "deep.png")
    assert deep.mode == "RGB" and abs(deep.getpixel((0, 0))[0] - 127) <= 1


def test_gif_first_frame_and_palette(tmp_path):
    frames = [Image.new("RGB", (8, 8), (250, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 250))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    r, _, b = load_image(tmp_path / "anim.gif").getpixel((1, 1))
    assert r > 200 and b < 50


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (0, 200, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert load_image(tmp_path / "rotated.jpg").size == (20, 40)


def test_resize_to_model_input(tmp_path):
    Image.new("RGB", (400, 533), (10, 20, 30)).save(tmp_path / "photo.png")
    pixels = load_resized(tmp_path / "photo.png", (224, 160))
    assert pixels.shape == (160, 224, 3) and pixels.dtype == np.uint8
    assert tuple(pixels[80, 100]) == (10, 20, 30)


def test_corrupt_missing_and_non_images_name_the_file(tmp_path, images_dir):
    (tmp_path / "cut.jpg").write_bytes((images_dir / "owl.jpg").read_bytes()[:200])
    (tmp_path / "text.jpg").write_text("hello")
    for name, pattern in [("cut.jpg", "cut.jpg"), ("text.jpg", "text.jpg is not a readable image"),
                          ("none.png", "none.png does not exist")]:
        with pytest.raises(ImageError, match=pattern) as info:
            load_image(tmp_path / name)
        assert "\n" not in str(info.value)
