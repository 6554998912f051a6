"""Image decoding and the one pre-processing implementation every backend shares.

decode_image: bytes / PIL image / HxWx3 array -> HxWx3 uint8 RGB, EXIF orientation applied, every
Pillow mode converted (L, LA, P with transparency, RGBA, CMYK, I;16, 1, ...); the pixel count is
checked from the header *before* the full decode.

prepare_image: decode, then at once the keep-ratio resize as the official pipeline does it (fit
`input_size` = (long, short) limits, sizes rounded with int(x + 0.5), OpenCV INTER_LINEAR on uint8),
so a full-resolution image never outlives its decoding. make_batch: zero-pad prepared images to the
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


def _open(data: bytes | Image.Image, max_pixels: int | None) -> Image.Image:
    """A lazily decoded Pillow image whose declared size passed the pixel cap (raises ImageError)."""
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
    return image


def _frame_count(image: Image.Image) -> int:
    """Frames in an animated file (GIF, APNG, WebP, TIFF pages); only the first is ever decoded."""
    try:
        return int(image.n_frames) if getattr(image, "is_animated", False) else 1
    except Exception:  # a damaged later frame must not fail the first one
        return 1


def _load_rgb(image: Image.Image) -> np.ndarray:
    """Decode the first frame to HxWx3 uint8 RGB with EXIF orientation applied (raises ImageError)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit is checked first
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # not in place, it copies even unrotated images
            return _to_array(_to_rgb(image))
    except Image.DecompressionBombError:
        raise ImageError("image declares too many pixels", kind="too_large") from None
    except Exception as exc:  # truncated or corrupt data surfaces only while decoding
        raise ImageError(f"cannot decode the image: {exc}") from None


def _to_array(image: Image.Image, strip_rows: int = 256) -> np.ndarray:
    """RGB image -> HxWx3 uint8 array, copied a strip of rows at a time: `np.asarray(image)` would
    first join the whole image into one bytes object, a second full copy at the memory peak."""
    width, height = image.size
    array = np.empty((height, width, 3), dtype=np.uint8)
    for top in range(0, height, strip_rows):
        bottom = min(top + strip_rows, height)
        array[top:bottom] = np.asarray(image.crop((0, top, width, bottom)))
    return array


def decode_image(data: bytes | Image.Image | np.ndarray, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode to an HxWx3 uint8 RGB array at full resolution (EXIF orientation applied). Raises ImageError."""
    if isinstance(data, np.ndarray):
        return _check_array(data, max_pixels)
    return _load_rgb(_open(data, max_pixels))


def image_pixels(data: bytes | Image.Image | np.ndarray, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> int:
    """Pixels the image will occupy once decoded, read from its header alone (raises ImageError as
    decoding would for a bad header or too many pixels). The service reserves this much of its
    pixel budget before decoding."""
    if isinstance(data, np.ndarray):
        return int(data.shape[0] * data.shape[1]) if data.ndim >= 2 else 0  # prepare_image validates it
    width, height = _open(data, max_pixels).size
    return width * height


@dataclass(frozen=True, eq=False)  # compared by identity: equality of pixel arrays is ambiguous
class PreparedImage:
    """One image ready for the model; the full-resolution pixels are already gone.

    pixels: uint8 [h, w, 3] RGB resized with keep ratio to fit the model's input (official rule);
    original_size: (h, w) of the decoded image (after EXIF orientation), the frame results are
    reported in; canvas: (H, W) = (h, w) rounded up to the size divisor, the padded input it runs
    in; frames: frames in the file (animated images: only the first is detected).
    """

    pixels: np.ndarray
    original_size: tuple[int, int]
    canvas: tuple[int, int]
    frames: int = 1


def prepare_image(
    data: bytes | Image.Image | np.ndarray, input_size: tuple[int, int], size_divisor: int, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> PreparedImage:
    """Decode, then resize at once so the full-resolution array lives only inside this call."""
    if isinstance(data, np.ndarray):
        array, frames = _check_array(data, max_pixels), 1
    else:
        image = _open(data, max_pixels)
        frames = _frame_count(image)
        array = _load_rgb(image)
        image.close()
    original_size = (int(array.shape[0]), int(array.shape[1]))
    h, w = fit_size(*original_size, input_size)
    if (h, w) != original_size:
        array = cv2.resize(array, (w, h), interpolation=cv2.INTER_LINEAR)
    canvas = (-(-h // size_divisor) * size_divisor, -(-w // size_divisor) * size_divisor)
    return PreparedImage(pixels=np.ascontiguousarray(array), original_size=original_size, canvas=canvas, frames=frames)


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
    """What a backend runs on (artifact.graph_inputs): images uint8 [B, 3, H, W] (zero-padded) and
    image_sizes int64 [B, 2], each image's resized content (h, w)."""

    images: np.ndarray
    image_sizes: np.ndarray


def pad_images(resized: list[np.ndarray], size_divisor: int) -> tuple[np.ndarray, np.ndarray]:
    """HxWx3 uint8 arrays -> (images uint8 [B, 3, H, W] zero-padded at the bottom/right to the largest
    size rounded up to a multiple of `size_divisor`, image_sizes int64 [B, 2] content (h, w))."""
    pad_h = -(-max(r.shape[0] for r in resized) // size_divisor) * size_divisor
    pad_w = -(-max(r.shape[1] for r in resized) // size_divisor) * size_divisor
    images = np.zeros((len(resized), 3, pad_h, pad_w), dtype=np.uint8)
    for b, r in enumerate(resized):
        images[b, :, : r.shape[0], : r.shape[1]] = r.transpose(2, 0, 1)  # HWC -> CHW
    return images, np.array([r.shape[:2] for r in resized], dtype=np.int64)


def make_batch(images: list[PreparedImage], size_divisor: int) -> Batch:
    """Pad prepared images into one batch. Images of different canvases pad to the largest, which
    changes their results slightly (GroupNorm statistics, coarse levels): `Detector.infer` therefore
    only ever batches images of one canvas."""
    padded, image_sizes = pad_images([image.pixels for image in images], size_divisor)
    return Batch(images=padded, image_sizes=image_sizes)
