"""The long-video node: runs the engine's job runner, streaming each chunk into an mp4 under ComfyUI's output folder,
with ComfyUI's progress bar and interrupt."""

from __future__ import annotations

import logging
from pathlib import Path

import comfy.model_management as model_management
import comfy.utils
import folder_paths
from comfy_api.input_impl import VideoFromFile

from relaxforcing.memory.policies import build_policy
from relaxforcing.pipeline import VideoPipeline
from relaxforcing.prompts import read_prompts
from relaxforcing.runner import Stopped, generate_videos

from . import sockets
from .preview_frames import spread_frames

log = logging.getLogger(__name__)

DEFAULT_MEMORY = "relax"
DEFAULT_PROMPT = "a red circle and a blue square bouncing on a black background"
STOP_REASON = "ComfyUI interrupt"
MAX_SEED = 2**63 - 1
TIPS = {
    "model": "From Relax Forcing: Load Model.",
    "prompt": "What the video shows. The toy model understands up to 3 coloured circles, squares, triangles and rings "
    "on a plain, checkered or striped background.",
    "seconds": "Video length; rounded up to whole chunks.",
    "filename_prefix": "Output file name prefix, relative to ComfyUI's output folder.",
    "crf": "H.264 quality: 0 lossless .. 51.",
    "preview_frames": "Frames in the preview_frames output (spread evenly over the whole video).",
    "memory": "A memory node's policy; default: relax with its defaults.",
}


class RelaxForcingLongVideo:
    """Generates a long video chunk by chunk (3 latent frames at a time) under a KV memory policy. Each finished chunk
    is appended to an mp4 in ComfyUI's output folder at once (NAME.part.mp4 until the video is complete). Cancel
    stops after the current chunk and keeps the partial video, playable, as NAME.part.mp4."""

    DESCRIPTION = __doc__
    CATEGORY = sockets.CATEGORY
    RETURN_TYPES = ("VIDEO", "IMAGE", "STRING")
    RETURN_NAMES = ("video", "preview_frames", "memory_trace")
    OUTPUT_TOOLTIPS = (
        "The finished mp4 (connect Save Video to keep a copy under another name, or Get Video Components).",
        "Up to preview_frames frames spread evenly over the video.",
        "Per-chunk memory trace, JSON lines: every attended frame with its role and RoPE position.",
    )
    OUTPUT_NODE = True
    FUNCTION = "generate"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "model": (sockets.MODEL, {"tooltip": TIPS["model"]}),
                "prompt": ("STRING", {"default": DEFAULT_PROMPT, "multiline": True, "tooltip": TIPS["prompt"]}),
                "seconds": (
                    "FLOAT",
                    {"default": 10.0, "min": 0.25, "max": 3600.0, "step": 0.25, "tooltip": TIPS["seconds"]},
                ),
                "seed": ("INT", {"default": 42, "min": 0, "max": MAX_SEED, "control_after_generate": True}),
                "filename_prefix": ("STRING", {"default": "relaxforcing/relax", "tooltip": TIPS["filename_prefix"]}),
                "crf": ("INT", {"default": 18, "min": 0, "max": 51, "tooltip": TIPS["crf"]}),
                "preview_frames": ("INT", {"default": 16, "min": 1, "max": 1024, "tooltip": TIPS["preview_frames"]}),
            },
            "optional": {"memory": (sockets.MEMORY, {"tooltip": TIPS["memory"]})},
        }

    @classmethod
    def VALIDATE_INPUTS(cls, prompt: str | None) -> bool | str:
        """An empty or over-long prompt is reported when the workflow is queued (a linked prompt: when it runs)."""
        try:
            if prompt is not None:
                read_prompts(prompt, None)
        except ValueError as error:
            return str(error)
        return True

    def generate(
        self,
        model: VideoPipeline,
        prompt: str,
        seconds: float,
        seed: int,
        filename_prefix: str,
        crf: int,
        preview_frames: int,
        memory: str | None = None,
    ) -> dict:
        pipe, memory = model, memory or DEFAULT_MEMORY
        prompts = read_prompts(prompt, None)
        latent_frames = pipe.latent_frames(seconds)  # ValueError before any work
        build_policy(memory, pipe.chunk_frames)  # the memory spec checked against this model's chunk size
        video, trace, subfolder = output_paths(filename_prefix)
        pipe.prepare(prompts)
        note = pipe.encode_text.interpret(prompts[0])
        if note:
            log.info("relaxforcing: %s", note)
        bar = comfy.utils.ProgressBar(latent_frames // pipe.chunk_frames)

        def progress(done: int, total: int, fps: float) -> None:
            if not model_management.processing_interrupted():  # the bar's hook would raise mid-job; stop at the chunk
                bar.update_absolute(done, total)

        def stop_requested() -> str | None:
            return STOP_REASON if model_management.processing_interrupted() else None

        try:
            stats = generate_videos(
                pipe,
                prompts,
                [seed],
                seconds,
                [video],
                memory=memory,
                trace_path=trace,
                progress=progress,
                crf=crf,
                stop_requested=stop_requested,
            )
        except Stopped as stopped:
            log.info("relaxforcing: %s; partial video kept: %s", stopped, stopped.partial_videos[0])
            model_management.throw_exception_if_processing_interrupted()
            raise model_management.InterruptProcessingException() from None
        log.info("relaxforcing: wrote %s (%d frames, %.1f fps)", video, stats.video_frames, stats.fps)
        images = spread_frames(video, stats.video_frames, preview_frames)
        shown = {"filename": video.name, "subfolder": subfolder, "type": "output"}
        return {
            "ui": {"images": [shown], "animated": (True,)},
            "result": (VideoFromFile(str(video)), images, trace.read_text()),
        }


def output_paths(filename_prefix: str) -> tuple[Path, Path, str]:
    """The next free ``PREFIX_00001_.mp4`` in ComfyUI's output folder (ComfyUI's own numbering), its trace file, and
    their subfolder there."""
    output_dir = folder_paths.get_output_directory()
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, output_dir)
    Path(folder).mkdir(parents=True, exist_ok=True)
    stem = f"{name}_{counter:05}_"
    return Path(folder) / f"{stem}.mp4", Path(folder) / f"{stem}.trace.jsonl", subfolder
