from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lastlayer.errors import ImageError
from lastlayer.images.decode import load_image, load_resized, resize_array, resize_image


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


def _huge_png(path, width: int, height: int) -> None:
    """A valid 1-bit PNG of any size, streamed (never held in memory): all-black rows compress to almost nothing."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer, row = zlib.compressobj(9), b"\0" * (1 + (width + 7) // 8)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def test_too_large_images_are_refused_by_a_configurable_limit(tmp_path, monkeypatch):
    import lastlayer.images.decode as images

    Image.new("1", (12000, 12000)).save(tmp_path / "big.png")
    _huge_png(tmp_path / "bomb.png", 20000, 20000)
    monkeypatch.setattr(images, "MAX_PIXELS", 50_000_000)
    with pytest.raises(ImageError, match=r"big.png: image too large \(12000 x 12000 = 144 MP, limit 50 MP\)"):
        load_image(tmp_path / "big.png")
    monkeypatch.setattr(images, "MAX_PIXELS", None)
    with pytest.raises(ImageError, match=r"bomb.png: image too large \(20000 x 20000 = 400 MP, limit 100 MP\)"):
        load_image(tmp_path / "bomb.png")  # Pillow's own DecompressionBombError never escapes
    monkeypatch.setenv("LASTLAYER_MAX_PIXELS", "1000")
    with pytest.raises(ImageError, match=r"limit 0.001 MP"):
        load_resized(tmp_path / "big.png", (32, 32))
    monkeypatch.setenv("LASTLAYER_MAX_PIXELS", "200000000")
    assert load_resized(tmp_path / "big.png", (8, 8)).shape == (8, 8, 3)


def test_the_limit_is_per_decode_and_pillows_global_is_left_as_it_was(tmp_path, monkeypatch):
    import lastlayer.images.decode as images

    Image.new("RGB", (50, 40), (10, 200, 30)).save(tmp_path / "small.png")
    before = Image.MAX_IMAGE_PIXELS
    assert load_resized(tmp_path / "small.png", (8, 8)).shape == (8, 8, 3)
    assert before == Image.MAX_IMAGE_PIXELS  # no process-wide change for anyone else using Pillow
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 900)  # Pillow refuses anything over 1,800 pixels outright
    with pytest.raises(Image.DecompressionBombError):
        Image.open(tmp_path / "small.png")
    assert load_image(tmp_path / "small.png").size == (50, 40)  # lastlayer's own limit (100 MP) decides
    assert Image.MAX_IMAGE_PIXELS == 900
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(images.ImageTooLargeError, match=r"image too large \(50 x 40 = 0.002 MP, limit 0.001 MP\)") as caught:
        load_image(tmp_path / "small.png")
    assert caught.value.size == (50, 40) and Image.MAX_IMAGE_PIXELS == 900


def test_images_in_memory_take_the_same_decoder_with_a_format_list(tmp_path):
    import io

    from lastlayer.images.decode import UnsupportedImageError, decode_image_bytes

    image = Image.new("RGB", (30, 20), (200, 10, 10))
    png, ico = io.BytesIO(), io.BytesIO()
    image.save(png, "PNG")
    image.save(ico, "ICO")
    (tmp_path / "a.png").write_bytes(png.getvalue())
    np.testing.assert_array_equal(decode_image_bytes(png.getvalue()), np.asarray(load_image(tmp_path / "a.png")))
    with pytest.raises(UnsupportedImageError, match="photo 1 is a ICO image") as caught:
        decode_image_bytes(ico.getvalue(), name="photo 1", formats={"PNG", "JPEG"})
    assert caught.value.format == "ICO"
    with pytest.raises(UnsupportedImageError) as caught:
        decode_image_bytes(b"%PDF-1.4 hello")
    assert caught.value.format is None
    with pytest.raises(ImageError, match="is empty"):
        decode_image_bytes(b"")


_PEAK = """
import resource, sys
from lastlayer.errors import ImageError
from lastlayer.images.decode import load_image
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for path in sys.argv[1:]:
    try:
        load_image(path)
    except ImageError as error:
        print(error)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_a_refused_image_is_never_decoded(tmp_path):
    import os
    import subprocess
    import sys

    _huge_png(tmp_path / "bomb.png", 20000, 20000)
    _huge_png(tmp_path / "big.png", 12000, 12000)
    env = {**os.environ, "LASTLAYER_MAX_PIXELS": "50000000"}
    run = subprocess.run([sys.executable, "-c", _PEAK, str(tmp_path / "bomb.png"), str(tmp_path / "big.png")],
                         capture_output=True, text=True, env=env, check=True)
    lines = run.stdout.splitlines()
    assert len(lines) == 3 and all("image too large" in line for line in lines[:2]), run.stdout + run.stderr
    assert int(lines[2]) < 100, f"loading grew the peak RSS by {lines[2]} MB"


def test_odd_files_are_image_errors_not_crashes(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10")
    (tmp_path / "folder.jpg").mkdir()
    for name in ("empty.png", "cut.png", "folder.jpg"):
        with pytest.raises(ImageError, match=name):
            load_image(tmp_path / name)


# --- resize_array -------------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "size"), [((240, 320, 3), (224, 224)), ((80, 100, 3), (224, 224)),
                                             ((480, 640, 3), (160, 128)), ((224, 224, 3), (224, 224))])
def test_resize_array_matches_the_file_path_exactly(shape, size):
    pixels = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    result = resize_array(pixels, size)
    assert result.dtype == np.uint8 and result.shape == (size[1], size[0], 3) and result.flags.c_contiguous
    np.testing.assert_array_equal(result, resize_image(Image.fromarray(pixels), size))


def test_resize_array_accepts_views_and_rejects_other_arrays():
    bgr = np.random.default_rng(2).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    rgb_view = bgr[:, :, ::-1]
    np.testing.assert_array_equal(resize_array(rgb_view, (224, 224)), resize_image(Image.fromarray(rgb_view.copy()), (224, 224)))
    for bad in (np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8), np.zeros((10, 10, 3), np.float32)):
        with pytest.raises(ImageError, match="HxWx3 uint8"):
            resize_array(bad, (5, 5))
