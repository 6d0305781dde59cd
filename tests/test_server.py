"""The live viewer: the page in headless Chromium, same-origin checks, stop on disconnect, input validation, and
the decoder each page picks."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import av
import httpx
import pytest
import torch
import uvicorn
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from relaxforcing.codecs.toy_autoencoder import ToyAutoencoder
from relaxforcing.loaders import load_toy
from relaxforcing.server.app import create_app
from relaxforcing.server.cli import WS_MAX_BYTES
from relaxforcing.server.decoders import check_decoder_options, offered_decoders
from relaxforcing.server.jobs import FRAME_HEADER, Job, JobRequest

pytestmark = pytest.mark.e2e  # subprocesses, browsers, whole videos: the slow tier

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PROMPT = "a red circle and a small yellow square bouncing on a checkered navy background"
DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "assets" / "viewer.png"


def random_toy_codec() -> ToyAutoencoder:
    """A second decoder for the toy model's latents (random weights: other frames of the same size)."""
    torch.manual_seed(0)
    return ToyAutoencoder().eval().requires_grad_(False)


@pytest.fixture(scope="module")
def server() -> Iterator[SimpleNamespace]:
    pipe = load_toy("cpu")
    app = create_app(pipe, decoders={"toy": pipe.codec, "random": random_toy_codec()}, max_seconds=60.0)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", ws_max_size=WS_MAX_BYTES)
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline, "the server did not start in 30 s"
        time.sleep(0.05)
    yield SimpleNamespace(app=app, url=f"http://127.0.0.1:{port}", ws=f"ws://127.0.0.1:{port}/ws")
    uv.should_exit = True
    thread.join(60)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh page, closed after the test whatever happens (closing the page stops its generation)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    yield page
    page.close()


def receive(ws: ClientConnection, kind: str, timeout: float = 60) -> dict:
    """The next JSON message of type ``kind`` (binary frames and other messages are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        message = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        if isinstance(message, str) and (parsed := json.loads(message))["type"] == kind:
            return parsed


def roles(page, pane: int = 0) -> list[tuple[str, int, int]]:
    """(role, latent frame, RoPE position) of each attended column of a pane's timeline, in frame order."""
    cols = page.eval_on_selector_all(f"#pane-{pane} .timeline [data-role]",
                                     "cols => cols.map(c => [c.dataset.role, +c.dataset.frame, +c.dataset.position])")
    return [tuple(col) for col in cols]


def scrub(page, pane: int, chunk: int) -> None:
    page.eval_on_selector(f"#pane-{pane} .scrub",
                          "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", chunk)


def wait_for(page, condition: str, timeout_ms: float = 120_000) -> None:
    """Wait until the JS arrow function ``condition`` returns true; on timeout, fail with what the page says.

    Counters are compared with ``>=``: the page may pass several values between two polls on a loaded machine.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(condition, timeout=timeout_ms)
    except PlaywrightTimeout:
        said = {selector: page.inner_text(selector) for selector in ("#error", "#status", "#log")}
        pytest.fail(f"timed out after {timeout_ms / 1000:.0f} s waiting for {condition}; the page says {said}")


def test_page_streams_a_relax_video_with_its_memory_timeline(server, page, tmp_path):
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.goto(server.url)
    page.wait_for_selector("#connection.on")

    # Bad inputs come back as messages in the page, and the page keeps working.
    for field, value, expected in [("#prompt", "a red dragon bouncing", "names nothing the toy model can draw"),
                                   ("#memory", "relax:foo=1", "relax: unknown parameter 'foo'"),
                                   ("#seconds", "1000", "seconds=1000 is out of range (0, 60.0]")]:
        page.fill("#prompt", PROMPT)
        page.fill("#memory", "relax")
        page.fill("#seconds", "10")
        page.fill(field, value)
        page.click("#generate")
        page.wait_for_function("t => document.querySelector('#error').textContent.includes(t)", arg=expected)

    page.fill("#memory", "relax")
    page.fill("#seconds", "10")
    page.fill("#seed", "1")
    page.click("#generate")
    wait_for(page, "() => +document.querySelector('#pane-0')?.dataset.chunks >= 3")
    assert page.inner_text("#error") == ""
    page.fill("#switch-prompt", "a blue square bouncing on a plain white background")
    page.click("#switch")
    wait_for(page, "() => document.querySelector('#pane-0').dataset.done === 'done'", timeout_ms=180_000)
    page.wait_for_selector("#pane-0[data-frames-received='168']")  # 10 s -> 42 latent frames -> 14 chunks x 12

    last = roles(page)  # chunk 13: [sink x2 | history | tail | current x3] at positions t-4 .. t+2
    assert [r for r, _, _ in last] == ["sink", "sink", "history", "tail", "current", "current", "current"]
    assert [f for _, f, _ in last] == [0, 1, last[2][1], 38, 39, 40, 41] and 2 <= last[2][1] < 38
    assert [p for _, _, p in last] == list(range(35, 42))
    assert page.locator("#pane-0 .timeline .col").count() == 42
    assert page.locator("#pane-0 .timeline [data-score]").count() == 4  # relax's four scored candidates
    assert page.locator("#pane-0 .timeline .col.switch").count() == 1
    assert page.inner_text("#pane-0 .decoder") == "toy codec"  # the server's default decoder
    assert "relax: switched to “a blue square" in page.inner_text("#log")
    assert page.locator("#pane-0 .timeline .prompt.p1").count() > 0  # frames made under the second prompt
    wait_for(page, "() => +document.querySelector('#pane-0').dataset.framesPlayed >= 16")
    page.screenshot(path=tmp_path / "viewer.png", full_page=True)
    if os.environ.get("RELAXFORCING_DOCS_SCREENSHOT"):  # refresh the docs' picture
        shutil.copy(tmp_path / "viewer.png", DOCS_SCREENSHOT)
    scrub(page, 0, 1)  # back to the dense warm-up
    assert [r for r, _, _ in roles(page)] == ["sink", "sink", "window", "current", "current", "current"]
    assert page.locator("#pane-0 .timeline .col.future").count() == 42 - 6

    href = page.get_attribute("#pane-0 .download", "href")
    video = httpx.get(server.url + href, timeout=30)
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    (tmp_path / "video.mp4").write_bytes(video.content)
    with av.open(str(tmp_path / "video.mp4")) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == 168 and frames[0].shape == (256, 256, 3)
    assert problems == []


def test_two_policies_side_by_side(server, page):
    page.goto(server.url)
    page.fill("#prompt", PROMPT)
    page.fill("#memory", "relax")
    page.fill("#compare", "sink:sink=1,tail=3")
    page.fill("#seconds", "2")  # 32 frames -> 9 latent frames -> 3 chunks per pane
    page.click("#generate")
    for pane in (0, 1):
        wait_for(page, f"() => document.querySelector('#pane-{pane}')?.dataset.done === 'done'")
        page.wait_for_selector(f"#pane-{pane}[data-frames-received='36']")
    assert page.inner_text("#pane-1 .policy") == "sink"
    assert [r for r, _, _ in roles(page, 1)] == ["sink", "tail", "tail", "tail", "current", "current", "current"]
    assert [r for r, _, _ in roles(page, 0)] == ["sink", "sink", "history", "tail", "current", "current", "current"]


def test_the_page_picks_a_decoder(server, page):
    page.goto(server.url)
    page.wait_for_selector("#connection.on")
    options = page.eval_on_selector_all("#decoder option", "options => options.map(o => [o.value, o.textContent])")
    assert options == [["toy", "toy codec"], ["random", "random"]] and page.input_value("#decoder") == "toy"
    page.fill("#prompt", PROMPT)
    page.fill("#seconds", "1")
    page.select_option("#decoder", "random")
    page.click("#generate")
    wait_for(page, "() => document.querySelector('#pane-0')?.dataset.done === 'done'")
    page.wait_for_selector("#pane-0[data-frames-received='24']")
    assert page.get_attribute("#pane-0", "data-decoder") == "random"
    assert page.inner_text("#pane-0 .decoder") == "random"
    assert "(decoder: random)" in page.inner_text("#pane-0 .details")
    assert "_random.mp4" in httpx.get(server.url + page.get_attribute("#pane-0 .download", "href"),
                                      timeout=30).headers["content-disposition"]

    page.eval_on_selector("#decoder", "select => select.append(new Option('gone', 'gone'))")  # a stale page
    page.select_option("#decoder", "gone")
    page.click("#generate")
    page.wait_for_function("t => document.querySelector('#error').textContent.includes(t)",
                           arg="unknown decoder 'gone'; this server offers toy, random")


def test_cross_origin_requests_are_refused(server):
    with pytest.raises(InvalidStatus) as refused:
        connect(server.ws, origin="http://evil.example", proxy=None, open_timeout=10)
    assert refused.value.response.status_code == 403
    with connect(server.ws, origin=server.url, proxy=None) as ws:  # the page's own origin is welcome
        ws.send(json.dumps({"type": "stop"}))
    rebound = httpx.get(server.url + "/", headers={"Host": "evil.example"})  # DNS rebinding
    assert rebound.status_code == 400


def test_bad_messages_get_an_error_reply(server):
    with connect(server.ws, proxy=None) as ws:
        for message, expected in [
            ("not json", "Expecting value"),
            ({"type": "dance"}, "unknown message type 'dance'"),
            ({"type": "switch", "prompt": "a red circle"}, "nothing is being generated"),
            ({"type": "start", "prompt": PROMPT, "memory": "relax", "seconds": 5, "seed": -1}, "seed=-1 is out of"),
            ({"type": "start", "prompt": PROMPT, "memory": ["relax", "sink", "dense"], "seconds": 5, "seed": 1},
             "give 1 to 2 memory policies"),
            ({"type": "start", "prompt": "", "memory": "relax", "seconds": 5, "seed": 1}, "the prompt is empty"),
            ({"type": "start", "prompt": PROMPT, "memory": "nope", "seconds": 5, "seed": 1},
             "unknown memory policy 'nope'"),
            ({"type": "start", "prompt": PROMPT, "memory": "relax", "seconds": 5, "seed": 1, "decoder": "nope"},
             "unknown decoder 'nope'; this server offers toy, random"),
            ({"type": "start", "prompt": PROMPT, "memory": "relax", "seconds": 5, "seed": 1, "decoder": "tae"},
             "the tiny decoder (tae) is not loaded on this server (start it with --decoder-weights"),
            ({"type": "start", "prompt": PROMPT, "memory": "relax", "seconds": 5, "seed": 1, "decoder": "wan"},
             "decoder 'wan' does not decode this model's latents"),
            ({"type": "start", "prompt": PROMPT, "memory": "relax", "seconds": 5, "seed": 1, "decoder": 1},
             "decoder must be a decoder name, got 1"),
        ]:
            ws.send(message if isinstance(message, str) else json.dumps(message))
            assert expected in receive(ws, "error", timeout=10)["message"]


def test_closing_the_socket_stops_the_generation(server):
    with connect(server.ws, origin=server.url, proxy=None) as ws:
        ws.send(json.dumps({"type": "start", "prompt": PROMPT, "memory": "relax", "seconds": 60, "seed": 7}))
        job_id = receive(ws, "chunk")["job"]
    job = server.app.state.board.jobs[job_id]
    job.thread.join(timeout=60)
    assert not job.thread.is_alive(), "the worker kept generating after the socket closed"
    assert job.state == "stopped" and job.chunks_done < job.total_chunks == 80
    done = job.chunks_done
    time.sleep(0.5)
    assert job.chunks_done == done


def test_stop_message_ends_the_job_and_keeps_its_video(server):
    with connect(server.ws, proxy=None) as ws:
        ws.send(json.dumps({"type": "start", "prompt": PROMPT, "memory": "sink", "seconds": 30, "seed": 2}))
        receive(ws, "chunk")
        ws.send(json.dumps({"type": "stop"}))
        done = receive(ws, "done")
    assert done["state"] == "stopped" and 1 <= done["chunks"] < 40
    video = httpx.get(server.url + done["downloads"][0], timeout=30)
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"


def test_non_finite_latents_fail_the_job_and_keep_its_frames(tmp_path, nan_from_chunk):
    pipe = load_toy("cpu")
    nan_from_chunk(pipe, 2)  # chunks 0 and 1 succeed
    sent: list = []
    job = Job(pipe, JobRequest(PROMPT, ("relax",), 3.0, 0, "toy"), tmp_path, sent.append)
    job.run()  # in this thread
    messages = [m for m in sent if isinstance(m, dict)]
    assert [m["type"] for m in messages] == ["started", "chunk", "chunk", "error", "done"]
    assert messages[3]["message"] == "non-finite latents in chunk 2 (frames 6..8); generation stopped"
    assert messages[4]["state"] == "failed" and messages[4]["chunks"] == 2
    assert messages[4]["downloads"] == [f"/video/{job.id}/0.mp4"]
    with av.open(str(job.paths[0])) as container:
        assert sum(1 for _ in container.decode(video=0)) == 24  # the two good chunks, playable


# ---- decoders ---------------------------------------------------------------------------------------------------


def frames_of(ws: ClientConnection, timeout: float = 120) -> tuple[dict, dict, dict[int, bytes]]:
    """(``started``, ``done``, video frame index -> image bytes of pane 0) of the job just started on ``ws``."""
    started, frames = receive(ws, "started", timeout), {}
    deadline = time.monotonic() + timeout
    while True:
        message = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        if isinstance(message, bytes):
            pane, _, _, index = FRAME_HEADER.unpack_from(message)
            if pane == 0:
                frames[index] = message[FRAME_HEADER.size:]
        elif (parsed := json.loads(message))["type"] == "done":
            return started, parsed, frames
        elif parsed["type"] == "chunk":
            assert parsed["decoder"] == started["decoder"]
        elif parsed["type"] == "error":
            pytest.fail(parsed["message"])


def test_config_lists_the_decoders(server):
    config = httpx.get(server.url + "/api/config").json()
    assert config["decoders"] == [{"name": "toy", "label": "toy codec"}, {"name": "random", "label": "random"}]
    assert config["defaults"]["decoder"] == "toy"


def test_each_decoder_streams_its_own_frames(server):
    made = {}
    with connect(server.ws, proxy=None) as ws:
        for decoder in (None, "toy", "random"):  # None: the server's default
            start = {"type": "start", "prompt": PROMPT, "memory": "relax", "seconds": 1, "seed": 3}
            ws.send(json.dumps(start if decoder is None else {**start, "decoder": decoder}))
            started, done, frames = frames_of(ws)
            assert started["decoder"] == (decoder or "toy") and done["state"] == "done"
            assert sorted(frames) == list(range(24))  # 1 s -> 6 latent frames -> 2 chunks x 12
            made[decoder] = frames
            video = httpx.get(server.url + done["downloads"][0], timeout=30)
            assert f"_{decoder or 'toy'}.mp4" in video.headers["content-disposition"]
    assert made[None] == made["toy"]  # same seed, same decoder: the same frames
    assert made["toy"] != made["random"]  # the same latents, decoded by another codec


def test_a_chunks_frames_go_out_as_they_are_decoded_before_its_message(server):
    """Frames are sent as they are decoded (the first chunk in two pieces: `test_output.py`), so each chunk's
    message follows its frames, and counts them."""
    with connect(server.ws, proxy=None) as ws:
        ws.send(json.dumps({"type": "start", "prompt": PROMPT, "memory": "relax", "seconds": 1, "seed": 3}))
        receive(ws, "started")
        sent = []  # frame indices, then "chunk <first frame> <frames>"
        while len(sent) < 26:
            message = ws.recv(timeout=60)
            if isinstance(message, bytes):
                sent.append(FRAME_HEADER.unpack_from(message)[3])
            elif (parsed := json.loads(message))["type"] == "chunk":
                sent.append(f"chunk {parsed['first_frame']} {parsed['frames']}")
        receive(ws, "done")
    assert sent == [*range(12), "chunk 0 12", *range(12, 24), "chunk 12 12"]


def test_serve_offers_the_tiny_decoder_beside_the_wan_vae(tmp_path, monkeypatch):
    """A tiny Wan2.1 stack with a TAEHV-layout file: the page can pick either decoder; both stream Wan's frame count
    and the VAE is loaded once."""
    pytest.importorskip("diffusers")
    from starlette.testclient import TestClient
    from wan_fixtures import TEST_LATENT_HW, TEST_SIZE, public_tae_file, tiny_dit, write_self_forcing_pt, write_wan_dir

    from relaxforcing import loaders
    from relaxforcing.codecs.tiny_wan import TinyWanCodec

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setitem(loaders.SIZES, TEST_SIZE, TEST_LATENT_HW)
    pipe = loaders.load_wan(write_self_forcing_pt(tmp_path / "dit.pt", tiny_dit()), write_wan_dir(tmp_path / "wan"),
                            device="cpu", size=TEST_SIZE)
    vae = pipe.codec
    assert offered_decoders(pipe) == ({"wan": vae}, "wan")
    decoders, default = offered_decoders(pipe, "tae", public_tae_file(tmp_path))
    assert list(decoders) == ["wan", "tae"] and default == "tae"
    assert decoders["wan"] is vae is pipe.codec and isinstance(decoders["tae"], TinyWanCodec)
    with pytest.raises(ValueError, match="--decoder tae needs --decoder-weights"):
        offered_decoders(pipe, "tae")

    app = create_app(pipe, decoders=decoders, default_decoder=default, allowed_hosts=["testserver"])
    with TestClient(app) as client:
        config = client.get("/api/config").json()
        assert [d["name"] for d in config["decoders"]] == ["wan", "tae"] and config["defaults"]["decoder"] == "tae"
        with client.websocket_connect("/ws") as ws:
            for decoder in ("wan", "tae"):
                ws.send_json({"type": "start", "prompt": "a cat runs on the beach", "memory": "relax",
                              "seconds": 0.75, "seed": 7, "decoder": decoder})
                frames = 0
                while (message := ws.receive()).get("text") is None or json.loads(message["text"])["type"] != "done":
                    if message.get("text") is None:
                        frames += 1
                    elif (parsed := json.loads(message["text"]))["type"] in ("started", "chunk"):
                        assert parsed["decoder"] == decoder
                    else:
                        assert parsed["type"] != "error", parsed["message"]
                assert json.loads(message["text"])["state"] == "done" and frames == 9  # 3 latents -> 1 + 4 * 2


def test_decoder_options_are_checked_before_the_model_loads():
    check_decoder_options("wan", None, toy=True)
    for decoder, weights, toy, expected in [("vae", None, False, "--decoder 'vae': choose wan"),
                                            ("tae", None, False, "--decoder tae needs --decoder-weights"),
                                            ("tae", Path("t.pth"), True, "the embedded toy model has its own codec"),
                                            ("wan", Path("t.pth"), True, "the embedded toy model has its own codec")]:
        with pytest.raises(ValueError, match=expected):
            check_decoder_options(decoder, weights, toy)
    pipe = load_toy("cpu")
    assert offered_decoders(pipe) == ({"toy": pipe.codec}, "toy")  # --decoder wan: the model's own codec
