"""
Input images: the one place where a client's bytes become the RGB
frame a pipeline is conditioned on. Pillow only: no torch, no Django, so the
API can check an upload at submit time and the worker prepares it the same way.

What is accepted: bytes that Pillow identifies, by their content alone, as
PNG, JPEG or WebP, with at most `max_pixels` pixels (read from the header,
before anything is decoded), one frame only, and that decode completely (a
truncated file is refused, never padded out).

Normalisation to RGB, one rule for every input:
1. EXIF orientation is applied first (ImageOps.exif_transpose), so width and
   height are those of the picture as it is meant to be seen.
2. Anything with transparency (an alpha channel: RGBA, LA, PA; or a palette
   or colour-key transparency, PNG's tRNS) is composited over opaque white.
3. 16-bit samples (PNG's I;16 greyscale, and 32-bit "I" holding them) are
   scaled to 8 bits, v * 255 / 65535 rounded, never clipped at 255.
   16-bit RGB(A) PNGs arrive as 8-bit already: Pillow keeps each sample's
   high byte, which is also a scaling.
4. Every other mode (CMYK, palette, greyscale, 1-bit, YCbCr) is converted by
   Pillow's convert("RGB"). ICC profiles are not applied: CMYK uses Pillow's
   plain conversion, without colour management.
A JPEG that carries extra pictures (MPO, as some cameras write) is its first,
primary picture; it is not animated.

Fitting to the job's width x height (`fit_image`), with Lanczos resampling
(after an exact whole-factor box reduction of large images, Pillow's
reducing_gap), deterministic (same image and size, same pixels):
- crop (the default): scale to cover the target, then keep the centre;
- pad: scale to fit inside the target, centred on black;
- stretch: resize to the target, ignoring the aspect ratio.
"""

import io
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_FITS = ("crop", "pad", "stretch")
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
# A decompression-bomb cap, checked against the header's size before any
# pixel is decoded: 40 megapixels is a 7300x5500 photo, more than any camera
# phone writes, and about 160 MB as RGBA while it is converted.
DEFAULT_MAX_PIXELS = 40_000_000

# The resampling of every resize here: Lanczos, after Pillow's exact box
# reduction by a whole factor while the image is over 3 times the target
# (reducing_gap), which keeps Lanczos' quality at a quarter of its cost on
# a photo made a video frame (bench/RESULTS.md, "image to video").
RESAMPLING = Image.Resampling.LANCZOS
REDUCING_GAP = 3.0

_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageError(ValueError):
    """Bytes that are not an acceptable image; str() is a reason a client may be shown (no paths)."""


@dataclass(frozen=True)
class DecodedImage:
    # Mode "RGB", EXIF orientation applied.
    image: Image.Image
    # "PNG", "JPEG" or "WEBP": what the content is, whatever it was called.
    format: str
    width: int
    height: int


class BufferReader(io.RawIOBase):
    """A read-only file over bytes or a bytearray that never copies it (io.BytesIO copies a bytearray whole)."""

    def __init__(self, data: bytes | bytearray):
        self._view = memoryview(data)
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, target) -> int:
        count = max(0, min(len(target), len(self._view) - self._position))
        target[:count] = self._view[self._position : self._position + count]
        self._position += count
        return count

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._view)}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position


def decode_image(data: bytes | bytearray, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Check and decode an uploaded image fully, then normalise it to RGB (the module's rule)."""
    if not data:
        raise ImageError("empty")
    try:
        opened = Image.open(io.BufferedReader(BufferReader(data)), formats=list(IMAGE_FORMATS))
    except Image.DecompressionBombError:
        raise ImageError(_too_many_pixels(None, max_pixels))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ImageError("not a PNG, JPEG or WebP image")
    with opened:
        # MPO is how Pillow names a JPEG with extra pictures: the first is the JPEG.
        image_format = "JPEG" if opened.format == "MPO" else opened.format
        if image_format not in IMAGE_FORMATS:
            raise ImageError("not a PNG, JPEG or WebP image")
        width, height = opened.size
        if width * height > max_pixels:
            raise ImageError(_too_many_pixels(width * height, max_pixels))
        if width < 1 or height < 1:
            raise ImageError("the image has no pixels")
        if opened.format != "MPO" and getattr(opened, "n_frames", 1) > 1:
            raise ImageError("animated images are not accepted: send one frame")
        try:
            opened.load()
        except Image.DecompressionBombError:
            raise ImageError(_too_many_pixels(width * height, max_pixels))
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            if "truncated" in str(exc) or isinstance(exc, EOFError):
                raise ImageError("the image is truncated")
            raise ImageError("the image could not be decoded")
        image = to_rgb(ImageOps.exif_transpose(opened))
    return DecodedImage(image=image, format=image_format, width=image.width, height=image.height)


def _too_many_pixels(pixels: int | None, max_pixels: int) -> str:
    if pixels is None:
        return f"the image has too many pixels; the limit is {max_pixels}"
    return f"the image has {pixels} pixels; the limit is {max_pixels}"


def to_rgb(image: Image.Image) -> Image.Image:
    """Steps 2-4 of the module's rule: any mode to RGB (an RGB image is returned as it is)."""
    if image.mode in _SIXTEEN_BIT_MODES:
        import numpy as np

        samples = np.asarray(image, dtype=np.float64)
        scaled = np.rint(np.clip(samples, 0, 65535) * (255 / 65535)).astype(np.uint8)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode == "RGB":
        return image
    return image.convert("RGB")


def fit_image(image: Image.Image, width: int, height: int, fit: str = "crop") -> Image.Image:
    """Exactly width x height RGB from image, by the fit (module docstring)."""
    if fit not in IMAGE_FITS:
        raise ValueError(f"fit must be one of {', '.join(IMAGE_FITS)}, not {fit!r}")
    if width < 1 or height < 1:
        raise ValueError(f"cannot fit an image into {width}x{height}")
    if image.mode != "RGB":
        image = to_rgb(image)
    source_width, source_height = image.size
    if (source_width, source_height) == (width, height):
        return image.copy()
    if fit == "stretch":
        return image.resize((width, height), RESAMPLING, reducing_gap=REDUCING_GAP)
    if fit == "crop":
        # The largest centred box of the target's aspect ratio, in source
        # pixels (fractional), resampled straight to the target: one resize.
        scale = max(width / source_width, height / source_height)
        box_width, box_height = width / scale, height / scale
        left, top = (source_width - box_width) / 2, (source_height - box_height) / 2
        box = (left, top, left + box_width, top + box_height)
        return image.resize((width, height), RESAMPLING, box=box, reducing_gap=REDUCING_GAP)
    scale = min(width / source_width, height / source_height)
    inner = (
        min(width, max(1, round(source_width * scale))),
        min(height, max(1, round(source_height * scale))),
    )
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    inside = image.resize(inner, RESAMPLING, reducing_gap=REDUCING_GAP)
    canvas.paste(inside, ((width - inner[0]) // 2, (height - inner[1]) // 2))
    return canvas


def prepare_image(
    data: bytes, width: int, height: int, fit: str, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """An uploaded image as the frame a pipeline takes: decoded, normalised and fitted to width x height."""
    if fit not in IMAGE_FITS:
        raise ValueError(f"fit must be one of {', '.join(IMAGE_FITS)}, not {fit!r}")
    return fit_image(decode_image(data, max_pixels=max_pixels).image, width, height, fit)
