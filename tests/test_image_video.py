"""Image-to-video and video extension on the toy model: given frames enter the memory through the clean pass."""

from __future__ import annotations

import base64
import sys

import av
import cv2
import numpy as np
import pytest
import torch

from relaxforcing import cli, media
from relaxforcing.evaluation.flow import dis_flow
from relaxforcing.loaders import load_toy
from relaxforcing.output import VideoOutput
from relaxforcing.pipeline import StartFrames
from relaxforcing.runner import generate_videos
from relaxforcing.toyworld.metrics import world_metrics
from relaxforcing.toyworld.render import render
from relaxforcing.toyworld.world import world_from_caption
from relaxforcing.video import VideoWriter

PROMPT = "a red circle and a blue square bouncing on a black background"


@pytest.fixture(scope="module")
def pipe():
    return load_toy("cpu")


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    """24 frames (1.5 s) of the toy world the prompt names, uint8 [T, 64, 64, 3]."""
    return render(world_from_caption(PROMPT, 3), 24)[0].numpy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def decode_all(pipe, session) -> np.ndarray:
    output = VideoOutput(pipe.codec.chunk_decoder())
    return np.concatenate([output(chunk)[0] for chunk in session])


def test_image_is_the_first_frame_within_the_codec_round_trip(pipe, clip):
    image = clip[0]
    session = pipe.session([PROMPT], [0], 6, "relax", image=image)
    chunks = list(session)
    assert [c.given for c in chunks] == [1, 0]
    frames = np.concatenate([VideoOutput(pipe.codec.chunk_decoder())(c)[0] for c in chunks])
    round_trip = pipe.codec.chunk_decoder().decode(pipe.encode_frames(np.repeat(image[None], 4, 0)))[0, 0]
    own = psnr(round_trip.numpy(), image)
    first = psnr(frames[0], image)
    print(f"first frame PSNR {first:.2f} dB; codec round trip {own:.2f} dB")
    assert first == pytest.approx(own, abs=1e-9) and first > 25
    assert psnr(frames[4], image) > 20  # the next latent frame continues the picture
    assert chunks[0].trace[0]["attended"][0]["role"] == "given"
    assert chunks[1].trace[0]["attended"][0] == {"frame": 0, "role": "sink", "position": 0, "given": True}


def test_given_chunks_are_committed_by_the_clean_pass(pipe):
    """A stream started from the clean latents of another stream's first chunk stores the same keys/values."""
    first = pipe.session([PROMPT], [1], 9, "dense")
    chunk = first.next_chunk()
    given = pipe.session([PROMPT], [1], 3, "dense", start=StartFrames(chunk.latents, continues=True, digest=""))
    committed = given.next_chunk()
    assert committed.given == 3 and torch.equal(committed.latents, chunk.latents)
    for name in ("k", "v", "prototype_sums"):
        assert torch.equal(given.store.state_tensors()[name], first.store.state_tensors()[name])


def test_resumed_extension_continues_bit_for_bit(pipe, clip):
    start = pipe.start_from(video=clip[:12], memory="sink:tail=3")
    assert start.given_frames == 3 and start.continues

    def fresh():
        return pipe.session([PROMPT], [2], 6, "sink:tail=3", start=start, record_latents=True)

    cut = fresh()
    assert cut.next_chunk().given == 3
    cut.next_chunk()
    latents = cut.recorded_latents()
    assert latents.shape[2] == 6 and torch.equal(latents[:, :, :3], start.latents)  # the given frames replay too
    saved = [(cut.state_tensors(with_store), cut.state_meta()) for with_store in (True, False)]
    reference = cut.next_chunk().latents
    for tensors, meta in saved:
        again = fresh()
        if "store.k" not in tensors:
            again.replay(latents)
        again.restore(tensors, meta)
        assert torch.equal(again.next_chunk().latents, reference)


def test_extension_keeps_the_clip_and_continues_without_a_jump(pipe, clip, tmp_path):
    out = tmp_path / "ext.mp4"
    start = pipe.start_from(video=clip, memory="relax")
    assert start.given_frames == 6  # relax attends 4 cached frames: two chunks of context
    stats = generate_videos(pipe, [PROMPT], [0], 1.5, [out], "relax", crf=0, start=start,
                            prefix=lambda: iter(clip))
    with av.open(str(out)) as container:
        video = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    video = video[:, ::4, ::4]  # the toy writes 4x upscaled pixels
    assert len(video) == len(clip) + stats.video_frames == 24 + 24
    assert psnr(video[:24], clip) > 35
    new = world_metrics(video[24:], PROMPT)
    old = world_metrics(clip, PROMPT)
    assert new["background_error_de76"] < old["background_error_de76"] + 3
    assert new["color_error_de00"] < 12 and new["persistence"] > 0.9
    flow = dis_flow()
    steps = [float(np.linalg.norm(flow(video[t], video[t + 1]), axis=-1).mean()) for t in range(len(video) - 1)]
    inside, seam = steps[:23], steps[23]
    print(f"seam flow {seam:.3f} px; clip frame-to-frame {np.mean(inside):.3f} +- {np.std(inside):.3f}")
    assert seam <= max(inside) + 3 * np.std(inside)


def test_short_and_portrait_clips(pipe, clip):
    with pytest.raises(ValueError, match="at least 12"):
        pipe.start_from(video=clip[:11])
    tall = np.repeat(clip[:12], 2, axis=1)  # 128x64: scaled to cover 64x64, centre-cropped
    start = pipe.start_from(video=tall, context_frames=30, sinks_from_start=True, memory="relax")
    assert start.given_frames == 3  # the clip holds one chunk: context and sinks are the same frames
    with pytest.raises(ValueError, match="keeps no sink"):
        pipe.start_from(video=clip, memory="dense", sinks_from_start=True)


def test_sinks_from_start_commits_the_clip_start_first(pipe, clip):
    start = pipe.start_from(video=clip, memory="relax", context_frames=3, sinks_from_start=True)
    head = pipe.encode_frames(clip[:12])
    assert start.given_frames == 6 and torch.equal(start.latents[:, :, :3], head)


def test_media_reads_gray_alpha_and_refuses_bad_files(tmp_path, monkeypatch):
    gray = tmp_path / "g.png"
    cv2.imwrite(str(gray), np.full((10, 20), 77, np.uint8))
    assert media.read_image(gray).shape == (10, 20, 3) and (media.read_image(gray) == 77).all()
    rgba = tmp_path / "a.png"
    pixels = np.zeros((8, 8, 4), np.uint8)
    pixels[..., 2], pixels[..., 3] = 200, 128  # red (BGR order on disk), half transparent
    cv2.imwrite(str(rgba), pixels)
    assert tuple(media.read_image(rgba)[0, 0]) == (100, 0, 0)  # composited over black
    assert media.fit_frame(np.zeros((30, 90, 3), np.uint8), (64, 64)).shape == (64, 64, 3)
    with pytest.raises(ValueError, match="RGB uint8"):
        media.fit_frame(np.zeros((8, 8, 2), np.uint8), (64, 64))
    junk, empty = tmp_path / "junk.png", tmp_path / "empty.png"
    junk.write_bytes(b"\x89PNG not really" * 20)
    empty.write_bytes(b"")
    for path, message in ((junk, "not a readable picture"), (empty, "empty"), (tmp_path / "no.png", "not exist")):
        with pytest.raises(ValueError, match=message):
            media.read_image(path)
    monkeypatch.setattr(media, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ValueError, match="megapixel limit"):
        media.read_image(gray)


def test_media_reads_videos_at_the_model_rate(tmp_path, clip):
    path = tmp_path / "c.mp4"
    with VideoWriter(path, fps=32, crf=0) as writer:
        writer.write(clip)
    video = media.open_clip(path)
    assert video.fps == 32
    assert len(list(video.frames((64, 64), 16))) == 12  # 24 frames at 32 fps -> 12 at 16 fps
    nothing = tmp_path / "zero.mp4"
    with av.open(str(nothing), "w") as container:
        container.add_stream("libx264", rate=16)
    with pytest.raises(ValueError, match="extend"):
        media.open_clip(nothing).context((64, 64), 16, 0, 12)


def run_main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["relaxforcing", *args])
    with pytest.raises(SystemExit) as exited:
        cli.main()
    return exited.value.code, capsys.readouterr().err


def test_cli_refuses_bad_inputs_in_one_line_and_overwrites_nothing(tmp_path, monkeypatch, capsys):
    out = tmp_path / "keep.mp4"
    out.write_bytes(b"precious")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8 broken")
    cases = [
        (["--image", str(junk)], "not a readable picture"),
        (["--extend", str(junk)], "not a readable video"),
        (["--image", str(junk), "--extend", str(junk)], "exclude each other"),
        (["--only-new"], "go with --extend"),
        (["--extend", str(out), "--context-seconds", "-1"], "positive"),
    ]
    for extra, message in cases:
        code, err = run_main(monkeypatch, capsys, "generate", PROMPT, "-o", str(out), "--overwrite", *extra)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert out.read_bytes() == b"precious"


def test_viewer_starts_from_a_picture_and_extends_the_last_video(pipe, clip, tmp_path):
    from relaxforcing.server.jobs import Job, JobBoard, JobRequest

    ok, png = cv2.imencode(".png", clip[0][..., ::-1])
    message = {"prompt": PROMPT, "memory": "relax", "seconds": 0.75, "seed": 0,
               "image": "data:image/png;base64," + base64.b64encode(png.tobytes()).decode()}
    request = JobRequest.parse(message, pipe, 10)
    sent: list = []
    first = Job(pipe, request, tmp_path, sent.append)
    first.run()
    assert first.state == "done" and first.paths[0].exists()
    board = JobBoard(pipe, tmp_path, 10, 1, 8)
    with pytest.raises(ValueError, match="base64"):
        JobRequest.parse({**message, "image": "%%%"}, pipe, 10, board.video)
    with pytest.raises(ValueError, match="no finished video"):
        JobRequest.parse({**message, "image": None, "extend": first.id}, pipe, 10, board.video)
    board.jobs[first.id] = first
    request = JobRequest.parse({**message, "image": None, "extend": first.id}, pipe, 10, board.video)
    sent.clear()
    second = Job(pipe, request, tmp_path, sent.append)
    second.run()
    chunks = [m for m in sent if isinstance(m, dict) and m["type"] == "chunk"]
    assert second.state == "done" and len(chunks) == 1 and chunks[0]["start"] == 3  # 3 latents of context
    with av.open(str(second.paths[0])) as container:
        assert sum(1 for _ in container.decode(video=0)) == 12 + 12  # the first video, then the new chunk
