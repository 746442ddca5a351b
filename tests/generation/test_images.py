"""Input images: what is accepted, how it is normalised to RGB, and how it is fitted (generation/images.py)."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from generation.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_FITS,
    ImageError,
    decode_image,
    fit_image,
    prepare_image,
)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """Noise compresses badly, so a cut anywhere lands in the middle of the pixel data."""
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(width: int, height: int) -> bytes:
    """
    A decompression bomb's start: a PNG header claiming width x height and
    a first IDAT of zeros (which compress a thousandfold, so the whole
    file would be a few kilobytes per megapixel).
    """
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + png_chunk(b"IDAT", zlib.compress(bytes(1_000_000)))


# -- accepted formats -------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_png_jpeg_and_webp_are_accepted_by_their_content(fmt):
    decoded = decode_image(encoded(noise(40, 30), fmt))

    assert decoded.format == fmt
    assert (decoded.width, decoded.height) == (40, 30)
    assert decoded.image.mode == "RGB" and decoded.image.size == (40, 30)


def test_a_png_is_a_png_whatever_it_is_called():
    # Nothing here sees a name or a declared type: only bytes.
    assert decode_image(encoded(noise(8, 8), "PNG")).format == "PNG"


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"hello, this is not an image at all" * 10, "not a PNG, JPEG or WebP image"),
        (
            b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
            b'<rect width="10" height="10" fill="red"/></svg>',
            "not a PNG, JPEG or WebP image",
        ),
    ],
    ids=["empty", "garbage", "svg"],
)
def test_what_is_not_an_image_is_refused_with_a_reason(data, reason):
    with pytest.raises(ImageError) as refused:
        decode_image(data)

    assert str(refused.value) == reason


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_other_image_formats_are_refused(fmt):
    with pytest.raises(ImageError, match="^not a PNG, JPEG or WebP image$"):
        decode_image(encoded(noise(16, 16), fmt))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_truncated_image_is_refused_not_padded(fmt):
    data = encoded(noise(64, 64), fmt)

    with pytest.raises(ImageError) as refused:
        decode_image(data[: len(data) // 2])

    assert str(refused.value) == "the image is truncated"


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_an_animated_image_is_refused(fmt):
    frames = [noise(16, 16, seed) for seed in range(3)]
    data = encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3

    with pytest.raises(ImageError) as refused:
        decode_image(data)

    assert str(refused.value) == "animated images are not accepted: send one frame"


def test_a_single_frame_webp_saved_as_animation_is_fine():
    data = encoded(noise(16, 16), "WEBP", save_all=True, append_images=[], duration=100)

    assert decode_image(data).format == "WEBP"


def test_a_jpeg_with_extra_pictures_is_its_first_picture():
    first, second = noise(32, 24, 1), noise(32, 24, 2)
    data = encoded(first, "MPO", save_all=True, append_images=[second])

    decoded = decode_image(data)

    assert decoded.format == "JPEG"
    expected = np.asarray(decode_image(encoded(first, "JPEG")).image, dtype=int)
    assert np.abs(np.asarray(decoded.image, dtype=int) - expected).mean() < 3


# -- the pixel cap -------------------------------------------------------------------


def test_a_bomb_header_is_refused_before_anything_is_decoded():
    with pytest.raises(ImageError) as refused:
        decode_image(png_bomb(10_000, 6_000))

    assert str(refused.value) == f"the image has 60000000 pixels; the limit is {DEFAULT_MAX_PIXELS}"


def test_a_header_past_pillows_own_bomb_limit_is_the_same_kind_of_refusal():
    with pytest.raises(ImageError, match="too many pixels|pixels; the limit is"):
        decode_image(png_bomb(30_000, 30_000))


def test_the_pixel_cap_is_the_callers():
    data = encoded(noise(40, 30), "PNG")

    with pytest.raises(ImageError, match="^the image has 1200 pixels; the limit is 1000$"):
        decode_image(data, max_pixels=1000)
    assert decode_image(data, max_pixels=1200).width == 40


# -- normalisation to RGB ------------------------------------------------------------


def test_a_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # pure red in ink

    decoded = decode_image(encoded(cmyk, "JPEG", quality=100))

    red, green, blue = decoded.image.getpixel((8, 8))
    assert decoded.image.mode == "RGB"
    assert red > 240 and green < 15 and blue < 15


def test_a_palette_png_with_a_transparent_entry_is_that_entry_over_white():
    image = Image.new("P", (4, 1))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    image.putdata([0, 1, 0, 1])
    data = encoded(image, "PNG", transparency=1)

    rgb = decode_image(data).image

    assert [rgb.getpixel((x, 0)) for x in range(4)] == [(255, 0, 0), (255, 255, 255)] * 2


@pytest.mark.parametrize(
    "mode, pixel, expected",
    [
        # Half-transparent black over white: mid grey. 128 alpha: 255 * 127/255 = 127.
        ("LA", (0, 128), (127, 127, 127)),
        ("RGBA", (0, 0, 255, 128), (127, 127, 255)),
        ("RGBA", (10, 20, 30, 0), (255, 255, 255)),
        ("RGBA", (10, 20, 30, 255), (10, 20, 30)),
    ],
)
def test_alpha_is_composited_over_white(mode, pixel, expected):
    data = encoded(Image.new(mode, (4, 4), pixel), "PNG")

    rgb = decode_image(data).image

    assert rgb.mode == "RGB"
    assert all(abs(got - want) <= 1 for got, want in zip(rgb.getpixel((1, 1)), expected))


def test_a_16_bit_png_is_scaled_to_8_bits_not_clipped():
    samples = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    data = encoded(Image.fromarray(samples), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")

    rgb = np.asarray(decode_image(data).image)

    # Clipping would have made every sample but 0 white.
    assert rgb[0, :, 0].tolist() == [0, 1, 128, 255]
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()


def test_a_16_bit_rgb_png_keeps_its_colours():
    image = Image.new("RGB", (4, 4), (200, 100, 50))
    # Pillow cannot write 16-bit RGB: the PNG is written by hand.
    rgb16 = np.asarray(image).astype(np.uint16) * 257
    raw = rgb16.astype(">u2").tobytes()
    rows = b"".join(b"\x00" + raw[y * 4 * 6 : (y + 1) * 4 * 6] for y in range(4))
    ihdr = struct.pack(">IIBBBBB", 4, 4, 16, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(rows))
    data += png_chunk(b"IEND", b"")

    assert decode_image(data).image.getpixel((2, 2)) == (200, 100, 50)


def test_a_greyscale_image_becomes_grey_rgb():
    rgb = decode_image(encoded(Image.new("L", (4, 4), 77), "PNG")).image

    assert rgb.getpixel((0, 0)) == (77, 77, 77)


def test_exif_orientation_is_applied_and_width_and_height_follow_it():
    # A landscape picture stored with "rotate 90 CW to display" (orientation 6).
    image = Image.new("RGB", (60, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 10, 20))  # the stored left edge is red
    exif = Image.Exif()
    exif[0x0112] = 6

    decoded = decode_image(encoded(image, "JPEG", exif=exif, quality=95))

    assert (decoded.width, decoded.height) == (20, 60)
    # Rotated 90 degrees clockwise, the stored left edge is now the top.
    red, _, blue = decoded.image.getpixel((10, 2))
    assert red > 200 and blue < 60
    red, _, blue = decoded.image.getpixel((10, 57))
    assert blue > 200 and red < 60


# -- fitting -------------------------------------------------------------------------


def quadrants(width: int, height: int) -> Image.Image:
    """Four flat colours, so what a fit keeps of each side can be read back."""
    image = Image.new("RGB", (width, height))
    half_w, half_h = width // 2, height // 2
    image.paste((255, 0, 0), (0, 0, half_w, half_h))
    image.paste((0, 255, 0), (half_w, 0, width, half_h))
    image.paste((0, 0, 255), (0, half_h, half_w, height))
    image.paste((255, 255, 0), (half_w, half_h, width, height))
    return image


def close(pixel, colour, tolerance=12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour))


@pytest.mark.parametrize("fit", IMAGE_FITS)
@pytest.mark.parametrize("size", [(64, 48), (48, 64), (50, 50), (17, 31)])
def test_every_fit_gives_exactly_the_size_asked_for(fit, size):
    fitted = fit_image(quadrants(300, 100), *size, fit)

    assert fitted.size == size and fitted.mode == "RGB"


def test_crop_covers_the_target_and_keeps_the_centre():
    # A wide image with black bands left and right that a centred crop to a square must cut off.
    image = Image.new("RGB", (300, 100), (0, 0, 0))
    image.paste(quadrants(100, 100), (100, 0))

    fitted = fit_image(image, 50, 50, "crop")

    assert close(fitted.getpixel((2, 2)), (255, 0, 0))
    assert close(fitted.getpixel((47, 2)), (0, 255, 0))
    assert close(fitted.getpixel((2, 47)), (0, 0, 255))
    assert close(fitted.getpixel((47, 47)), (255, 255, 0))


def test_pad_keeps_everything_and_fills_the_rest_with_black():
    fitted = fit_image(quadrants(100, 50), 100, 100, "pad")

    # The 2:1 image is 100x50 in the middle: black bands of 25 above and below.
    assert fitted.getpixel((50, 5)) == (0, 0, 0) and fitted.getpixel((50, 94)) == (0, 0, 0)
    assert close(fitted.getpixel((2, 27)), (255, 0, 0))
    assert close(fitted.getpixel((97, 72)), (255, 255, 0))


def test_stretch_keeps_everything_and_fills_the_frame():
    fitted = fit_image(quadrants(100, 50), 40, 80, "stretch")

    assert close(fitted.getpixel((1, 1)), (255, 0, 0))
    assert close(fitted.getpixel((38, 1)), (0, 255, 0))
    assert close(fitted.getpixel((1, 78)), (0, 0, 255))
    assert close(fitted.getpixel((38, 78)), (255, 255, 0))


def test_the_same_image_fits_to_the_same_pixels_every_time():
    image = noise(123, 77)

    assert all(
        np.array_equal(np.asarray(fit_image(image, 64, 48, fit)), np.asarray(fit_image(image, 64, 48, fit)))
        for fit in IMAGE_FITS
    )


def test_an_image_of_the_target_size_is_kept_as_it_is():
    image = noise(64, 48)

    assert np.array_equal(np.asarray(fit_image(image, 64, 48, "crop")), np.asarray(image))


def test_an_unknown_fit_is_a_value_error():
    with pytest.raises(ValueError, match="crop, pad, stretch"):
        fit_image(noise(8, 8), 8, 8, "zoom")
    with pytest.raises(ValueError, match="crop, pad, stretch"):
        prepare_image(encoded(noise(8, 8), "PNG"), 8, 8, "zoom")


def test_prepare_image_decodes_normalises_and_fits_in_one_call():
    data = encoded(Image.new("RGBA", (300, 100), (0, 0, 0, 0)), "PNG")

    frame = prepare_image(data, 64, 48, "crop")

    assert frame.size == (64, 48) and frame.mode == "RGB"
    assert frame.getpixel((30, 20)) == (255, 255, 255)


def test_prepare_image_refuses_what_decode_image_refuses():
    with pytest.raises(ImageError, match="^empty$"):
        prepare_image(b"", 64, 48, "crop")
