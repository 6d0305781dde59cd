"""VideoOutput: decoding overlapped with generation gives the same frames, in the same order, as decoding inline."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from relaxforcing.evaluation.video_io import read_video
from relaxforcing.loaders import load_toy
from relaxforcing.output import VideoOutput
from relaxforcing.runner import generate_videos
from relaxforcing.sampling import Chunk

PROMPT = "a red circle and a blue square bouncing on a black background"


class RecordingWriter:
    """Collects what a VideoWriter would encode."""

    def __init__(self) -> None:
        self.frames: list[np.ndarray] = []

    def write(self, frames: np.ndarray) -> None:
        self.frames.append(frames.copy())

    def video(self) -> np.ndarray:
        """Every frame written, ``[T, H, W, 3]``."""
        return np.concatenate(self.frames)


class SlowDecoder:
    """A streaming decoder that takes its time: each frame depends on every latent frame up to it, so any split of
    the stream into calls gives the same frames."""

    def __init__(self) -> None:
        self.total = torch.zeros(())

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        time.sleep(0.01)
        frames = []
        for i in range(latents.shape[2]):
            self.total = self.total + latents[:, :, i].sum()
            frames.append(latents[:, 0, i, :, :, None] + self.total)  # [B, h, w, 1]
        return torch.stack(frames, dim=1).repeat(1, 1, 1, 1, 3).clamp(0, 255).to(torch.uint8)  # [B, f, h, w, 3]


def test_overlapped_output_keeps_frames_and_order():
    chunks = [Chunk(i, 3 * i, torch.rand(2, 4, 3, 4, 4) * 40) for i in range(6)]
    results = {}
    for overlap in (False, True):
        writers = [RecordingWriter(), RecordingWriter()]
        with VideoOutput(SlowDecoder(), writers, overlap=overlap) as output:
            futures = [output.submit(chunk) for chunk in chunks]
            last = output.wait()
        assert np.array_equal(last, futures[-1].result()) and output.frames_out == 18
        results[overlap] = [w.video() for w in writers]
    assert all(np.array_equal(a, b) for a, b in zip(results[False], results[True], strict=True))


def test_a_nan_chunk_is_never_written():
    """Serial: the NaN chunk's submit raises. Overlapped: it is checked on the decode thread (the host does not
    wait for the device), and its error comes from the next wait or submit; nothing of it or after it is written."""
    for overlap in (False, True):
        writer = RecordingWriter()
        with VideoOutput(SlowDecoder(), [writer], overlap=overlap) as output:
            output.submit(Chunk(0, 0, torch.ones(1, 4, 3, 4, 4)))
            nan = Chunk(1, 3, torch.full((1, 4, 3, 4, 4), float("nan")))
            if overlap:
                output.submit(nan)
                with pytest.raises(FloatingPointError, match="chunk 1"):
                    output.wait()
            with pytest.raises(FloatingPointError, match="chunk 1"):
                output.submit(nan if not overlap else Chunk(2, 6, torch.ones(1, 4, 3, 4, 4)))
        assert len(writer.video()) == 3  # the first chunk's frames


@pytest.mark.e2e
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="the decode stream and the latents-ready event are CUDA's"))])
def test_generate_with_overlap_writes_the_same_video(tmp_path, device):
    """On CUDA the overlapped decode runs on its own stream from the chunk's latents-ready event, beside the clean
    pass: the frames are still those of the serial decode."""
    pipe = load_toy(device)
    videos = {}
    for overlap in (False, True):
        out = tmp_path / f"v{overlap}.mp4"
        stats = generate_videos(pipe, [PROMPT], [3], 2.25, [out], memory="relax", crf=0, overlap=overlap)
        assert stats.video_frames == 36
        videos[overlap], _ = read_video(out)
    assert np.array_equal(videos[False], videos[True])


class FailingDecoder(SlowDecoder):
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        if latents.mean() > 100:
            raise RuntimeError("out of memory")
        return super().decode(latents)


def test_nothing_is_written_after_a_chunk_that_failed_to_decode():
    writer = RecordingWriter()
    with VideoOutput(FailingDecoder(), [writer], overlap=True) as output:
        for value in (1.0, 1000.0, 1.0):
            try:
                output.submit(Chunk(0, 0, torch.full((1, 4, 3, 4, 4), value)))
            except RuntimeError as error:  # the failure was seen before the last chunk was handed over
                assert str(error) == "out of memory"
        with pytest.raises(RuntimeError, match="out of memory"):  # or "an earlier chunk failed to decode (out of.."
            output.wait()
    assert len(writer.video()) == 3  # the first chunk's frames


def test_without_writers_the_frames_are_only_returned():
    output = VideoOutput(SlowDecoder())
    frames = output(Chunk(0, 0, torch.ones(2, 4, 3, 4, 4)))
    assert frames.shape == (2, 3, 4, 4, 3) and output.frames_out == 3


def test_the_first_frame_is_written_before_the_rest_of_its_chunk():
    """The first chunk is decoded and written in two pieces (its first latent frame first), later chunks whole; the
    frames are those of one decode of the whole stream."""
    latents = torch.rand(1, 4, 9, 4, 4) * 40
    for overlap in (False, True):
        writer = RecordingWriter()
        with VideoOutput(SlowDecoder(), [writer], overlap=overlap) as output:
            for i in range(3):
                output.submit(Chunk(i, 3 * i, latents[:, :, 3 * i:3 * i + 3]))
        assert [len(f) for f in writer.frames] == [1, 2, 3, 3]
        assert np.array_equal(writer.video(), SlowDecoder().decode(latents)[0].numpy())
        assert output.frames_out == 9 and len(output.decode_seconds) == 3 and output.first_frame_at is not None
