"""Motion across the seam of a continued video (evaluation/seam.py)."""

from __future__ import annotations

import numpy as np
import pytest

from relaxforcing.evaluation.seam import seam_motion
from relaxforcing.evaluation.synthetic import moving_shapes


def test_a_continuous_video_moves_across_its_seam_as_it_moves_elsewhere() -> None:
    frames = list(moving_shapes(40, 64, 64, 2))
    seam = seam_motion(iter(frames), 20, 8)
    assert seam.within_spread
    assert len(seam.before) == 7 and len(seam.after) == 7
    assert seam.seam == pytest.approx(np.median(seam.before), rel=0.5)


def test_a_spliced_video_jumps_at_its_seam() -> None:
    first = list(moving_shapes(20, 64, 64, 2, seed=0))
    second = list(moving_shapes(20, 64, 64, 2, seed=1))[10:]  # other shapes, mid-motion: a jump
    seam = seam_motion(first + second, 20, 8)
    assert not seam.within_spread
    assert seam.seam > 2 * seam.before.max()
    assert seam.summary()["within_spread"] is False


def test_frames_past_the_window_are_not_read() -> None:
    read = []

    def frames():
        for index, frame in enumerate(moving_shapes(100, 32, 32, 1)):
            read.append(index)
            yield frame

    seam_motion(frames(), 10, 4)
    assert max(read) == 14


@pytest.mark.parametrize(("seam", "window", "count"), [(1, 4, 20), (19, 4, 20), (10, 1, 20)])
def test_a_seam_without_two_frames_each_side_is_an_error(seam: int, window: int, count: int) -> None:
    with pytest.raises(ValueError, match="at least 2 frames"):
        seam_motion(moving_shapes(count, 32, 32, 1), seam, window)
