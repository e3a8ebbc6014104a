"""Budgets that need no server: uploads planned from their headers and decoded reduced, heavy requests taking turns,
and credentials masked in any text."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from lastlayer.images.decode import decode_image_bytes, plan_image_bytes, reduce_factor, resize_image
from lastlayer.serve.uploads import DECODE_SIDE, UploadError, decode_uploads
from lastlayer.sources.base import redact


def _encoded(image: Image.Image, form: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=form, **options)
    return buffer.getvalue()


def _gradient(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    pixels = np.stack([np.broadcast_to(x, (height, width)), np.broadcast_to(y, (height, width)),
                       np.broadcast_to((x + y) / 2, (height, width))], axis=-1)
    return Image.fromarray(pixels.astype(np.uint8))


def test_a_large_photo_is_decoded_reduced_and_looks_the_same_at_the_models_size() -> None:
    image = _gradient(4000, 3000)
    data = _encoded(image, "PNG")
    plan = plan_image_bytes(data, min_size=DECODE_SIDE)
    assert plan.size == (4000, 3000) and plan.format == "PNG"
    decoded = decode_uploads([data])[0]
    factor = reduce_factor((4000, 3000), DECODE_SIDE)
    assert factor == 3 and decoded.shape == (1000, 1334, 3)  # both sides >= 2 x DECODE_SIDE
    full = decode_image_bytes(data)
    difference = np.abs(resize_image(Image.fromarray(decoded), (224, 224)).astype(int) - resize_image(Image.fromarray(full), (224, 224)))
    assert difference.mean() < 1.5


def test_an_exif_rotated_photo_is_reduced_upright() -> None:
    image = _gradient(3000, 2000)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    decoded = decode_uploads([_encoded(image, "PNG", exif=exif)])[0]
    assert decoded.shape[0] > decoded.shape[1]  # portrait once upright
    assert decoded[0, -1, 0] < decoded[-1, -1, 0]  # the file's left column (dark red) is the top row, read right to left


def test_sixteen_bit_and_palette_photos_keep_their_colours_when_reduced() -> None:
    grey16 = Image.fromarray((np.linspace(0, 65535, 4000 * 2000).reshape(2000, 4000)).astype(np.uint16))
    reduced = decode_uploads([_encoded(grey16, "PNG")])[0]
    assert reduced.shape == (1000, 2000, 3)
    assert reduced[0, 0, 0] < 10 and reduced[-1, -1, 0] > 245
    palette = _gradient(2400, 1800).quantize(64)
    decoded = decode_uploads([_encoded(palette, "PNG")])[0]
    assert decoded.shape == (900, 1200, 3) and decoded[-1, -1].mean() > 200


def test_a_request_is_refused_from_its_headers_beyond_its_pixel_budget() -> None:
    photo = _encoded(Image.new("RGB", (3000, 3000), (10, 20, 30)), "PNG")
    with pytest.raises(UploadError) as caught:
        decode_uploads([photo] * 3, request_pixels=20_000_000)
    assert caught.value.status == 413 and "27 megapixels" in str(caught.value) and "20 one request" in str(caught.value)
    jpeg = _encoded(Image.new("RGB", (3000, 3000), (10, 20, 30)), "JPEG")  # a JPEG counts at its reduced scale
    assert len(decode_uploads([jpeg] * 3, request_pixels=20_000_000)) == 3


def test_a_small_file_that_decodes_to_gigabytes_is_refused_from_its_header() -> None:
    webp = _encoded(Image.new("RGB", (7000, 7000), (200, 40, 30)), "WEBP", lossless=True, method=0)
    assert len(webp) < 2000
    with pytest.raises(UploadError) as caught:
        decode_uploads([webp])
    assert caught.value.status == 413 and "MiB to decode" in str(caught.value) and "JPEG" in str(caught.value)


def test_heavy_requests_beyond_the_queue_are_answered_503_at_once() -> None:
    from lastlayer.serve.turns import ServerBusyError, Turns

    async def crowd() -> tuple[list[str], int]:
        turns, order, release = Turns(1, 2), [], asyncio.Event()

        async def request(name: str) -> None:
            async with turns.turn():
                order.append(name)
                await release.wait()

        running = [asyncio.ensure_future(request(name)) for name in "abc"]
        await asyncio.sleep(0.05)
        with pytest.raises(ServerBusyError) as caught:
            async with turns.turn():
                pass
        assert caught.value.status == 503 and caught.value.headers == {"retry-after": "2"}
        release.set()
        await asyncio.gather(*running)
        return order, turns.running

    order, running = asyncio.run(crowd())
    assert order == ["a", "b", "c"] and running == 0  # first come, first served; every slot given back


@pytest.mark.parametrize(("text", "masked"), [
    ("rtsp://admin:s3cr3t@10.0.0.5:554/live", "rtsp://admin:***@10.0.0.5:554/live"),
    ("https://ghp_TOKEN123@example.com/x.mjpg", "https://***@example.com/x.mjpg"),
    ("http://cam/video?user=a&password=hunter2&fps=5", "http://cam/video?user=a&password=***&fps=5"),
    ("lost rtsp://u:p@a/1 and rtsp://v:q@b/2; retrying", "lost rtsp://u:***@a/1 and rtsp://v:***@b/2; retrying"),
    ("camera 0 stopped", "camera 0 stopped"),
])
def test_credentials_are_masked_in_any_text(text: str, masked: str) -> None:
    assert redact(text) == masked


def test_a_request_waiting_longer_than_max_wait_is_answered_503_and_gives_its_place_back() -> None:
    from lastlayer.serve.turns import ServerBusyError, Turns

    async def late() -> tuple[str, int, int]:
        turns, release = Turns(1, 8, max_wait=0.1), asyncio.Event()

        async def holder() -> None:
            async with turns.turn():
                await release.wait()

        held = asyncio.ensure_future(holder())
        await asyncio.sleep(0.01)

        async def refused() -> None:
            async with turns.turn():
                pass

        with pytest.raises(ServerBusyError) as caught:
            await asyncio.wait_for(refused(), 30)  # (without max_wait: a TimeoutError fails the test)
        waiting = turns.waiting
        release.set()
        await held
        async with turns.turn():  # the slot is free again
            pass
        return str(caught.value), waiting, turns.running

    message, waiting, running = asyncio.run(late())
    assert "within 0.1 s" in message and waiting == 0 and running == 0
