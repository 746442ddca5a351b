"""Images as clients send them, and the tiny models that take them."""

import io

import numpy as np
from PIL import Image

I2V = "tiny-random-i2v"
FLF = "tiny-random-wan-flf2v"


def png(width: int = 96, height: int = 64, seed: int = 0, fmt: str = "PNG") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()
