from pathlib import Path

import numpy as np


def decode_mp4(path: Path) -> tuple[dict, np.ndarray]:
    """Decode an MP4 back with ffmpeg: its metadata and every frame."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    width, height = meta["size"]
    frames = [np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3) for raw in reader]
    return meta, np.stack(frames)
