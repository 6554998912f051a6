"""Image decoding and the one pre-processing implementation every backend shares.

decode_image: bytes / PIL image / HxWx3 array -> HxWx3 uint8 RGB, EXIF orientation applied, every
Pillow mode converted (L, LA, P with transparency, RGBA, CMYK, I;16, 1, ...); the pixel count is
checked from the header *before* the full decode.

make_batch: keep-ratio resize as the official pipeline does it (fit `input_size` = (long, short)
limits, sizes rounded with int(x + 0.5), OpenCV INTER_LINEAR on uint8), zero-pad every image to the
batch's largest size rounded up to a multiple of `size_divisor`, channels first.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 50_000_000  # a 7071 x 7071 photo; a PNG bomb declares far more in its header


class ImageError(ValueError):
    """An image we cannot use. `kind` says why: "undecodable", "too_large" or "unsupported"."""

    def __init__(self, message: str, kind: str = "undecodable"):
        super().__init__(message)
        self.kind = kind


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB. Alpha is dropped and the colour under it kept, as cv2.imread does."""
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):  # 16/32-bit greyscale: scale to 8 bits
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        image = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if image.mode == "F":
        array = np.nan_to_num(np.asarray(image, dtype=np.float64))
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        image = Image.fromarray(scaled.astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        return Image.fromarray(np.asarray(image)[:, :, :3].copy(), mode="RGB")
    return image.convert("RGB")


def decode_image(data: bytes | Image.Image | np.ndarray, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode to an HxWx3 uint8 RGB array (EXIF orientation applied). Raises ImageError."""
    if isinstance(data, np.ndarray):
        return _check_array(data, max_pixels)
    if isinstance(data, Image.Image):
        image = data
    elif isinstance(data, (bytes, bytearray, memoryview)):
        if len(data) == 0:
            raise ImageError("empty image: zero bytes")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(io.BytesIO(data))  # reads the header only
        except UnidentifiedImageError:
            raise ImageError("cannot identify the image format (not an image, or an unsupported format)") from None
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):
            raise ImageError("image declares too many pixels", kind="too_large") from None
        except Exception as exc:  # Pillow raises many kinds for damaged headers
            raise ImageError(f"cannot read the image header: {exc}") from None
    else:
        raise TypeError(f"expected bytes, a PIL image or an HxWx3 uint8 array, got {type(data).__name__}")

    width, height = image.size
    if width < 1 or height < 1:
        raise ImageError(f"image has no pixels ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(f"image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}", kind="too_large")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is above
            image.load()
            image = ImageOps.exif_transpose(image)
            rgb = _to_rgb(image)
            return np.asarray(rgb, dtype=np.uint8)
    except Image.DecompressionBombError:
        raise ImageError("image declares too many pixels", kind="too_large") from None
    except Exception as exc:  # truncated or corrupt data surfaces only while decoding
        raise ImageError(f"cannot decode the image: {exc}") from None


def _check_array(array: np.ndarray, max_pixels: int | None) -> np.ndarray:
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ImageError(f"expected an HxWx3 (RGB) array, got shape {array.shape}", kind="unsupported")
    if array.dtype != np.uint8:
        raise ImageError(f"expected a uint8 array, got {array.dtype}", kind="unsupported")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ImageError(f"image has no pixels ({array.shape[1]}x{array.shape[0]})")
    if max_pixels is not None and array.shape[0] * array.shape[1] > max_pixels:
        raise ImageError(f"image has {array.shape[0] * array.shape[1]:,} pixels; the limit is {max_pixels:,}", kind="too_large")
    return np.ascontiguousarray(array[:, :, :3])


def fit_size(height: int, width: int, input_size: tuple[int, int]) -> tuple[int, int]:
    """Official keep-ratio size: factor = min(long_max / long side, short_max / short side)."""
    long_max, short_max = input_size
    factor = min(long_max / max(height, width), short_max / min(height, width))
    return max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))


@dataclass(frozen=True)
class Batch:
    """images uint8 [B, 3, H, W] (zero-padded), image_sizes int64 [B, 2] resized content (h, w),
    original_sizes int64 [B, 2] (h, w) of the decoded images."""

    images: np.ndarray
    image_sizes: np.ndarray
    original_sizes: np.ndarray


def pad_images(resized: list[np.ndarray], size_divisor: int) -> tuple[np.ndarray, np.ndarray]:
    """HxWx3 uint8 arrays -> (images uint8 [B, 3, H, W] zero-padded at the bottom/right to the largest
    size rounded up to a multiple of `size_divisor`, image_sizes int64 [B, 2] content (h, w))."""
    pad_h = -(-max(r.shape[0] for r in resized) // size_divisor) * size_divisor
    pad_w = -(-max(r.shape[1] for r in resized) // size_divisor) * size_divisor
    images = np.zeros((len(resized), 3, pad_h, pad_w), dtype=np.uint8)
    for b, r in enumerate(resized):
        images[b, :, : r.shape[0], : r.shape[1]] = r.transpose(2, 0, 1)  # HWC -> CHW
    return images, np.array([r.shape[:2] for r in resized], dtype=np.int64)


def make_batch(arrays: list[np.ndarray], input_size: tuple[int, int], size_divisor: int) -> Batch:
    """Resize each HxWx3 uint8 RGB array to fit `input_size` and pad them into one batch."""
    resized = []
    for array in arrays:
        h, w = fit_size(array.shape[0], array.shape[1], input_size)
        resized.append(cv2.resize(array, (w, h), interpolation=cv2.INTER_LINEAR) if (h, w) != array.shape[:2] else array)
    images, image_sizes = pad_images(resized, size_divisor)
    original_sizes = np.array([a.shape[:2] for a in arrays], dtype=np.int64)
    return Batch(images=images, image_sizes=image_sizes, original_sizes=original_sizes)
