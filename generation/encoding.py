"""
Frames to files: the MP4 clients download and the poster image shown before
playback. Files are written under a temporary name and renamed into place, so
no reader ever sees half a file.
"""

import contextlib
import os
from pathlib import Path

import numpy as np


class EncodingError(Exception):
    """The frames could not be written as a video or an image."""


def encode_mp4(frames: np.ndarray, path: Path, *, fps: int) -> Path:
    """
    Write frames (uint8, shaped frames x height x width x 3) to path as an
    H.264 MP4 in yuv420p at fps, with the moov atom up front (faststart) so a
    browser can start playing before the whole file has arrived.
    """
    import imageio_ffmpeg

    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise EncodingError(f"expected uint8 frames shaped (n, h, w, 3), got {frames.dtype} {frames.shape}")
    count, height, width, _ = frames.shape
    if count == 0:
        raise EncodingError("no frames to encode")
    if width % 2 or height % 2:
        raise EncodingError(f"H.264 in yuv420p needs an even width and height, got {width}x{height}")

    path = Path(path)
    partial = path.with_name(path.name + ".part")
    writer = imageio_ffmpeg.write_frames(
        str(partial),
        (width, height),
        fps=fps,
        codec="libx264",
        pix_fmt_in="rgb24",
        pix_fmt_out="yuv420p",
        # imageio-ffmpeg otherwise rescales to a multiple of 16 pixels.
        macro_block_size=1,
        quality=None,
        ffmpeg_log_level="error",
        # "-f mp4" because the partial name's extension says nothing.
        output_params=["-crf", "18", "-movflags", "+faststart", "-f", "mp4"],
    )
    try:
        writer.send(None)
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
        os.replace(partial, path)
    except Exception as exc:
        with contextlib.suppress(Exception):
            writer.close()
        partial.unlink(missing_ok=True)
        raise EncodingError(f"could not encode MP4: {exc}") from exc
    return path


def write_poster(frame: np.ndarray, path: Path) -> Path:
    """Write one frame as a JPEG poster image."""
    from PIL import Image

    path = Path(path)
    partial = path.with_name(path.name + ".part")
    try:
        Image.fromarray(frame).save(partial, format="JPEG", quality=90)
        os.replace(partial, path)
    except Exception as exc:
        partial.unlink(missing_ok=True)
        raise EncodingError(f"could not write poster image: {exc}") from exc
    return path
