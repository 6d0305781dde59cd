"""A bounded IMAGE batch of preview frames, read back from a finished mp4 at an even stride."""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import torch


def spread_frames(video: Path, total_frames: int, count: int) -> torch.Tensor:
    """At most ``count`` frames spread evenly over ``video`` (``total_frames`` long) as ComfyUI's ``IMAGE``:
    float ``[N, H, W, 3]`` in [0, 1]. Only the kept frames are held in memory."""
    stride = max(1, math.ceil(total_frames / max(count, 1)))
    kept: list[np.ndarray] = []
    with av.open(str(video)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % stride == 0:
                kept.append(frame.to_ndarray(format="rgb24"))
                if len(kept) == count:
                    break
    if not kept:
        raise ValueError(f"{video} holds no frames")
    return torch.from_numpy(np.stack(kept)).float().div_(255.0)
