import subprocess

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from generation.encoding import EncodingError, encode_mp4, write_poster
from tests.support.jobs import gradient_frames
from tests.support.decode import decode_mp4


def test_it_writes_every_frame_at_the_requested_fps_and_size(tmp_path):
    frames = gradient_frames(13, 48, 80)

    path = encode_mp4(frames, tmp_path / "out.mp4", fps=12)

    meta, decoded = decode_mp4(path)
    assert meta["fps"] == 12
    assert meta["size"] == (80, 48)
    assert decoded.shape == (13, 48, 80, 3)
    # Lossy, but close: the colours of each frame survive.
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 6


def test_it_keeps_sizes_that_are_not_multiples_of_16(tmp_path):
    path = encode_mp4(gradient_frames(3, 34, 50), tmp_path / "odd.mp4", fps=24)

    meta, decoded = decode_mp4(path)
    assert meta["size"] == (50, 34)
    assert decoded.shape[0] == 3


def test_it_writes_h264_yuv420p_with_the_index_up_front(tmp_path):
    path = encode_mp4(gradient_frames(5, 32, 32), tmp_path / "out.mp4", fps=24)

    probe = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True
    )
    assert "h264" in probe.stderr and "yuv420p" in probe.stderr
    data = path.read_bytes()
    # faststart: the moov atom comes before the media data.
    assert data.index(b"moov") < data.index(b"mdat")


def test_it_leaves_no_partial_file_behind(tmp_path):
    encode_mp4(gradient_frames(2, 16, 16), tmp_path / "out.mp4", fps=24)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_it_refuses_an_odd_size_that_yuv420p_cannot_hold(tmp_path):
    with pytest.raises(EncodingError, match="even width and height"):
        encode_mp4(gradient_frames(2, 15, 16), tmp_path / "out.mp4", fps=24)
    assert list(tmp_path.iterdir()) == []


def test_it_refuses_frames_of_the_wrong_type(tmp_path):
    with pytest.raises(EncodingError, match="uint8"):
        encode_mp4(np.zeros((2, 16, 16, 3), dtype=np.float32), tmp_path / "out.mp4", fps=24)


def test_a_failed_write_removes_the_partial_file(tmp_path):
    target = tmp_path / "missing-dir" / "out.mp4"

    with pytest.raises(EncodingError):
        encode_mp4(gradient_frames(2, 16, 16), target, fps=24)
    assert not target.parent.exists() or list(target.parent.iterdir()) == []


def test_the_poster_is_a_jpeg_of_the_frame(tmp_path):
    frame = gradient_frames(1, 40, 64)[0]

    path = write_poster(frame, tmp_path / "poster.jpg")

    with Image.open(path) as image:
        assert image.format == "JPEG"
        assert image.size == (64, 40)


def test_read_frames_gives_back_every_frame_of_an_encoded_mp4(tmp_path):
    from generation.encoding import read_frames

    frames = gradient_frames(13, 48, 80)
    path = encode_mp4(frames, tmp_path / "out.mp4", fps=12)

    decoded = read_frames(path)

    assert decoded.shape == (13, 48, 80, 3) and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 6
    assert np.array_equal(decoded, decode_mp4(path)[1])


def test_last_frame_is_the_last_frame_read_frames_gives(tmp_path):
    from generation.encoding import last_frame, read_frames

    frames = gradient_frames(30, 32, 48)
    path = encode_mp4(frames, tmp_path / "out.mp4", fps=24)

    last = last_frame(path)

    assert last.shape == (32, 48, 3) and last.dtype == np.uint8
    assert np.array_equal(last, read_frames(path)[-1])
    # The last frame of the source, not any other: the green ramp is at its top.
    assert abs(int(last[:, :, 1].mean()) - 255) < 6


@pytest.mark.parametrize("content", [None, b"", b"not a video at all"])
def test_reading_a_missing_or_broken_video_is_an_encoding_error(tmp_path, content):
    from generation.encoding import last_frame, read_frames

    path = tmp_path / "broken.mp4"
    if content is not None:
        path.write_bytes(content)

    with pytest.raises(EncodingError):
        read_frames(path)
    with pytest.raises(EncodingError):
        last_frame(path)
