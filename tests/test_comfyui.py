"""The ComfyUI node package (comfyui/) in a real ComfyUI: installed into ComfyUI's own venv, started headless on
loopback, driven through its HTTP API with the example workflows (tests/comfyui_server.py does the plumbing)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import MISSING, fields
from pathlib import Path

import av
import numpy as np
import pytest
from comfyui_server import NODE_PACKAGE, VENDOR, ComfyServer, prepared_install, run, running_comfyui

from relaxforcing.loaders import load_toy
from relaxforcing.memory.policies import POLICIES

pytestmark = pytest.mark.e2e  # a ComfyUI install, a server, whole videos: the slow tier

WORKFLOWS = NODE_PACKAGE / "workflows"
API_WORKFLOW = WORKFLOWS / "relax_long_video_api.json"
UI_WORKFLOW = WORKFLOWS / "relax_long_video.json"
LOADER, MEMORY, GENERATOR, SAVER = "1", "2", "3", "4"
"""Node ids in the example API workflow."""
NODES = ["RelaxForcingLoadModel", "RelaxForcingLongVideo", *(f"RelaxForcingMemory{n.title()}" for n in POLICIES)]
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def comfyui(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> ComfyServer:
    if not VENDOR.is_dir():
        pytest.skip(f"{VENDOR} (ComfyUI's source for tests) is absent")
    cache = request.config.cache.mkdir("comfyui") if request.config.cache else tmp_path_factory.mktemp("venv")
    install = prepared_install(Path(os.environ.get("RELAXFORCING_COMFYUI_CACHE", cache)))
    with running_comfyui(install, tmp_path_factory.mktemp("comfyui")) as server:
        yield server


@pytest.fixture(scope="module")
def toy():
    return load_toy()


def api_workflow(**changes: object) -> dict:
    """The example API workflow with some of the Long Video node's inputs changed."""
    graph = json.loads(API_WORKFLOW.read_text())
    graph[GENERATOR]["inputs"].update(changes)
    return graph


def decoded(video: Path) -> np.ndarray:
    with av.open(str(video)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_every_node_is_registered_with_our_defaults(comfyui: ComfyServer):
    info = comfyui.get("/object_info")
    missing = [name for name in NODES if name not in info]
    assert not missing, f"not in /object_info (import failed?): {missing}\n{comfyui.log_text()[-3000:]}"
    assert "IMPORT FAILED" not in comfyui.log_text()
    assert all(info[name]["category"] == "relaxforcing" for name in NODES)
    for name, policy in POLICIES.items():
        widgets = info[f"RelaxForcingMemory{name.title()}"]["input"]["required"]
        spelling = {field: alias for alias, field in policy.aliases.items()}
        ours = {spelling.get(f.name, f.name): f.default for f in fields(policy) if f.name != "chunk_frames"}
        assert {key: spec[1]["default"] for key, spec in widgets.items()} == ours
        assert MISSING not in ours.values()
    generator = info["RelaxForcingLongVideo"]
    assert generator["output"] == ["VIDEO", "IMAGE", "STRING"] and generator["output_node"]


def test_the_api_workflow_makes_the_video(comfyui: ComfyServer, toy):
    graph = json.loads(API_WORKFLOW.read_text())
    began = time.monotonic()
    entry = comfyui.finished(comfyui.queue(graph))
    assert entry["status"]["status_str"] == "success", entry["status"]
    seconds = graph[GENERATOR]["inputs"]["seconds"]
    frames = toy.video_frames(toy.latent_frames(seconds))
    saved = entry["outputs"][SAVER]["images"][0]  # ComfyUI's own SaveVideo
    video = decoded(comfyui.output / saved["subfolder"] / saved["filename"])
    assert video.shape == (frames, 256, 256, 3)  # the toy's 64x64 frames, written 4x
    assert video.std() > 10 and np.abs(np.diff(video.astype(np.int16), axis=0)).mean() > 0.1  # a picture, moving
    streamed = entry["outputs"][GENERATOR]["images"][0]  # the mp4 the node streamed chunk by chunk
    assert streamed["filename"].endswith(".mp4") and not streamed["filename"].endswith(".part.mp4")
    streamed_path = comfyui.output / streamed["subfolder"] / streamed["filename"]
    assert np.array_equal(decoded(streamed_path), video)  # SaveVideo copied the stream
    trace = streamed_path.with_name(streamed_path.name.removesuffix(".mp4") + ".trace.jsonl").read_text()
    chunks = toy.latent_frames(seconds) // toy.chunk_frames
    assert len(trace.splitlines()) == chunks and json.loads(trace.splitlines()[-1])["policy"] == "relax"
    assert len(entry["outputs"]["5"]["images"]) == graph[GENERATOR]["inputs"]["preview_frames"]
    print(f"{seconds:.0f} s toy video through ComfyUI in {time.monotonic() - began:.1f} s")


def test_invalid_inputs_are_answered_with_node_errors(comfyui: ComfyServer):
    status, answer = comfyui.post("/prompt", {"prompt": api_workflow(seconds=-1.0)})
    assert status == 400 and answer["node_errors"][GENERATOR]["errors"][0]["type"] == "value_smaller_than_min"
    graph = api_workflow()
    graph[MEMORY]["inputs"]["hist"] = 5  # the engine's own check: more history frames than candidates
    status, answer = comfyui.post("/prompt", {"prompt": graph})
    assert (
        status == 400 and "hist=5 cannot exceed candidates=4" in answer["node_errors"][MEMORY]["errors"][0]["details"]
    )
    graph = api_workflow()
    graph[LOADER]["inputs"]["checkpoint"] = "no_such_checkpoint.safetensors"
    status, answer = comfyui.post("/prompt", {"prompt": graph})
    assert status == 400 and "no_such_checkpoint" in answer["node_errors"][LOADER]["errors"][0]["details"]


def test_interrupt_stops_at_a_chunk_boundary_keeping_the_partial_video(comfyui: ComfyServer, toy):
    seconds, prefix = 300.0, "relaxforcing/interrupted"
    prompt_id = comfyui.queue(api_workflow(seconds=seconds, seed=7, filename_prefix=prefix))
    partial = comfyui.output / "relaxforcing" / "interrupted_00001_.part.mp4"
    deadline = time.monotonic() + 60
    while not (partial.is_file() and partial.stat().st_size > 20_000) and time.monotonic() < deadline:
        time.sleep(0.1)  # a couple of chunks are on disk
    assert comfyui.post("/interrupt", {})[0] == 200
    entry = comfyui.finished(prompt_id, timeout=60)
    kinds = [message[0] for message in entry["status"]["messages"]]
    assert "execution_interrupted" in kinds and "execution_success" not in kinds, kinds
    frames = decoded(partial)
    chunk = toy.video_frames(toy.chunk_frames)
    assert 0 < len(frames) < toy.video_frames(toy.latent_frames(seconds)) and len(frames) % chunk == 0
    assert frames.std() > 10
    assert not partial.with_name("interrupted_00001_.mp4").exists()
    assert comfyui.get("/queue")["queue_running"] == []  # and the server is ready for the next prompt


def test_the_ui_workflow_is_the_api_workflow(comfyui: ComfyServer):
    """Widget for widget, as ComfyUI's /object_info orders them (the seed's control_after_generate value aside)."""
    info, ui, api = (
        comfyui.get("/object_info"),
        json.loads(UI_WORKFLOW.read_text()),
        json.loads(API_WORKFLOW.read_text()),
    )
    graph_nodes = {str(node["id"]): node for node in ui["nodes"] if node["type"] != "Note"}
    assert {i: n["type"] for i, n in graph_nodes.items()} == {i: n["class_type"] for i, n in api.items()}
    links = {link[0]: link for link in ui["links"]}
    for node_id, node in graph_nodes.items():
        order = info[node["type"]]["input_order"]
        names = [*order.get("required", []), *order.get("optional", [])]
        wired = {slot["name"]: links[slot["link"]] for slot in node["inputs"] if slot.get("link") is not None}
        widgets = [n for n in names if n not in wired and n in api[node_id]["inputs"]]
        values = list(node.get("widgets_values") or [])
        if "seed" in widgets:
            del values[widgets.index("seed") + 1]  # control_after_generate
        assert dict(zip(widgets, values, strict=True)) == {n: api[node_id]["inputs"][n] for n in widgets}
        assert {n: [str(link[1]), link[2]] for n, link in wired.items()} == {
            n: v for n, v in api[node_id]["inputs"].items() if isinstance(v, list)
        }


def test_the_ui_workflow_loads_in_the_page(comfyui: ComfyServer):
    """ComfyUI's own front end opens the UI workflow, knows every node, and turns it into the API workflow."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(comfyui.url)
            page.wait_for_function("window.app && window.app.graph", timeout=60_000)
            page.evaluate(
                "ui => window.app.loadGraphData(ui, true, true, 'relax_long_video')",
                json.loads(UI_WORKFLOW.read_text()),
            )
            unknown = page.evaluate("window.app.graph.nodes.filter(n => n.has_errors).map(n => n.type)")
            prompt = page.evaluate("window.app.graphToPrompt().then(p => p.output)")
        finally:
            browser.close()
    assert unknown == []
    api = json.loads(API_WORKFLOW.read_text())
    assert {i: (n["class_type"], n["inputs"]) for i, n in prompt.items()} == {
        i: (n["class_type"], n["inputs"]) for i, n in api.items()
    }


def test_comfyui_reads_the_registry_metadata(comfyui: ComfyServer):
    code = (
        "import json, sys; from comfy_config import config_parser as c; "
        "p = c.extract_node_configuration(sys.argv[1]); print(json.dumps(p.model_dump(by_alias=False)))"
    )
    config = json.loads(
        run([str(comfyui.install.python), "-c", code, str(NODE_PACKAGE)], cwd=comfyui.install.source).splitlines()[-1]
    )
    assert config["project"]["name"] == "relaxforcing-nodes" and config["project"]["version"]
    assert config["tool_comfy"]["publisher_id"] and config["tool_comfy"]["display_name"]
