"""Decoding (modes, EXIF, bad data, pixel caps) and the shared resize / pad / batch step."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from vfnet.server.runtime import ImageError, decode_image, make_batch, prepare_image
from vfnet.server.runtime.images import fit_size


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height pixels but carries almost no data (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "mode, value, expected",
    [
        ("L", 77, (77, 77, 77)),
        ("1", 1, (255, 255, 255)),
        ("RGBA", (10, 20, 30, 0), (10, 20, 30)),  # alpha dropped, colour kept (as cv2.imread)
        ("LA", (90, 255), (90, 90, 90)),
        ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
        ("I;16", 65535, (255, 255, 255)),
    ],
)
def test_every_mode_becomes_rgb_uint8(mode, value, expected):
    image = Image.new(mode, (5, 4), value)
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "LA" else "PNG")
    array = decode_image(encode(image, fmt))
    assert array.shape == (4, 5, 3) and array.dtype == np.uint8
    assert np.abs(array[1, 1].astype(int) - expected).max() <= (2 if fmt == "JPEG" else 0)


def test_palette_with_transparency():
    image = Image.new("P", (6, 6), 1)
    image.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    array = decode_image(encode(image, "PNG", transparency=0))
    assert array.shape == (6, 6, 3) and array[0, 0].tolist() == [200, 100, 50]


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 10, 10))  # white square at the top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to view
    array = decode_image(encode(image, "JPEG", exif=exif, quality=95))
    assert array.shape == (40, 20, 3)  # height and width swapped
    assert array[5, 14].mean() > 200 and array[5, 5].mean() < 50  # the square moved to the top-right


NOISE = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
TRUNCATED_JPEG = encode(Image.fromarray(NOISE), "JPEG")[:20_000]  # the header is intact, the data is not


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "zero bytes"),
        (b"hello, this is text, not an image", "cannot identify"),
        (TRUNCATED_JPEG, "cannot decode"),
    ],
)
def test_undecodable_data(data, message):
    with pytest.raises(ImageError, match=message) as info:
        decode_image(data)
    assert info.value.kind == "undecodable"


@pytest.mark.parametrize("side", [100_000, 10_000])  # beyond Pillow's bomb error, and its bomb warning
def test_decompression_bombs_are_refused_from_the_header(side):
    with pytest.raises(ImageError, match="too many pixels") as info:
        decode_image(png_header_only(side, side), max_pixels=None)
    assert info.value.kind == "too_large"


def test_pixel_cap_checked_from_the_header():
    with pytest.raises(ImageError, match="8000x8000 = 64,000,000 pixels; the limit is 50,000,000") as info:
        decode_image(png_header_only(8000, 8000))  # would fail while decoding: no data behind the header
    assert info.value.kind == "too_large"
    with pytest.raises(ImageError) as info:
        decode_image(encode(Image.new("RGB", (300, 200))), max_pixels=50_000)
    assert info.value.kind == "too_large"


def test_arrays_and_pil_images():
    array = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    assert np.array_equal(decode_image(array), array)
    assert np.array_equal(decode_image(Image.fromarray(array)), array)
    with pytest.raises(ImageError, match="uint8"):
        decode_image(array.astype(np.float32))
    with pytest.raises(TypeError):
        decode_image("street.jpg")


def test_official_keep_ratio_size():
    assert fit_size(480, 640, (1333, 800)) == (800, 1067)  # factor 800/480: int(640 * 5/3 + 0.5)
    assert fit_size(1000, 3000, (1333, 800)) == (444, 1333)  # the long side binds
    assert fit_size(1, 1, (1333, 800)) == (800, 800)
    assert fit_size(20, 8000, (1333, 800)) == (3, 1333)


def test_batch_pads_to_multiple_of_32_and_keeps_content():
    a = np.full((100, 50, 3), 200, np.uint8)
    b = np.full((20, 8000, 3), 100, np.uint8)
    prepared = [prepare_image(a, (512, 512), 32), prepare_image(b, (512, 512), 32)]
    batch = make_batch(prepared, 32)
    assert batch.images.shape == (2, 3, 512, 512) and batch.images.dtype == np.uint8
    assert batch.image_sizes.tolist() == [[512, 256], [1, 512]]
    assert [image.original_size for image in prepared] == [(100, 50), (20, 8000)]
    assert (batch.images[0, :, :512, :256] == 200).all() and (batch.images[0, :, :, 256:] == 0).all()
    assert (batch.images[1, :, :1, :] == 100).all() and (batch.images[1, :, 1:, :] == 0).all()
