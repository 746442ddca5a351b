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


def write_preview(frames: np.ndarray, path: Path, *, fps: int, max_side: int = 256, max_frames: int = 48) -> Path:
    """
    A small looping animated WebP for people browsing jobs: at most max_side
    pixels on its long side and max_frames frames (evenly sampled, timed so
    it lasts as long as the video).
    """
    from PIL import Image

    path = Path(path)
    partial = path.with_name(path.name + ".part")
    count, height, width, _ = frames.shape
    stride = max(1, -(-count // max_frames))
    sampled = frames[::stride]
    scale = min(1.0, max_side / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    images = [Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR) for frame in sampled]
    try:
        images[0].save(
            partial,
            format="WEBP",
            save_all=True,
            append_images=images[1:],
            duration=max(1, round(1000 * stride / fps)),
            loop=0,
            quality=70,
        )
        os.replace(partial, path)
    except Exception as exc:
        partial.unlink(missing_ok=True)
        raise EncodingError(f"could not write preview: {exc}") from exc
    return path


def _frames(path: Path):
    """Each decoded frame of a video in order, as uint8 (height, width, 3), one at a time."""
    import imageio_ffmpeg

    if not Path(path).is_file():
        raise EncodingError(f"no video at {path}")
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    try:
        width, height = next(reader)["size"]
        for raw in reader:
            yield np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)
    except (OSError, RuntimeError, StopIteration, KeyError) as exc:
        raise EncodingError(f"could not decode {Path(path).name}: {exc}") from exc
    finally:
        reader.close()


def read_frames(path: Path) -> np.ndarray:
    """Every frame of a video (an MP4 this module wrote, say) as uint8, shaped (frames, height, width, 3)."""
    frames = list(_frames(path))
    if not frames:
        raise EncodingError(f"{Path(path).name} has no frames")
    return np.stack(frames)


def last_frame(path: Path) -> np.ndarray:
    """
    The last frame of a video as uint8 (height, width, 3), streamed: one
    frame is held at a time. H.264 here has a key frame only every 250
    frames, so a seek towards the end would decode about as much.
    """
    frame = None
    for frame in _frames(path):
        pass
    if frame is None:
        raise EncodingError(f"{Path(path).name} has no frames")
    return frame.copy()
