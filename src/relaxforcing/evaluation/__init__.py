"""Long-video evaluation: VBench-Long procedure with pluggable (weight-free or local-weight) backends."""

from relaxforcing.evaluation.backends import (
    DEFAULT_BACKENDS,
    REGISTRY,
    WEIGHT_KEYS,
    Backend,
    ResolvedBackend,
    metric_name,
    resolve_backends,
)
from relaxforcing.evaluation.calibration import CalibrationPoint, calibrate_flow, translated_pair
from relaxforcing.evaluation.clips import clip_length_frames, clip_spans, iter_clips
from relaxforcing.evaluation.consistency import consistency_terms, first_previous_consistency
from relaxforcing.evaluation.drift import Drift, start_end_drift, time_curve
from relaxforcing.evaluation.dynamic_degree import check_move, clip_dynamic_degree, dynamic_degree_params
from relaxforcing.evaluation.flicker import consecutive_mae, freeze_fraction, temporal_flickering
from relaxforcing.evaluation.flow import dis_flow, farneback_flow, flow_interpolator
from relaxforcing.evaluation.report import markdown_report, write_report
from relaxforcing.evaluation.smoothness import motion_smoothness
from relaxforcing.evaluation.suite import check_inputs, evaluate_video, evaluate_videos, run_eval, world_sidecar
from relaxforcing.evaluation.timeline import plot_memory_timeline, read_trace
from relaxforcing.evaluation.video_io import VideoInfo, iter_frames, probe_video, read_video, write_video

__all__ = [
    "DEFAULT_BACKENDS",
    "REGISTRY",
    "WEIGHT_KEYS",
    "Backend",
    "CalibrationPoint",
    "Drift",
    "ResolvedBackend",
    "VideoInfo",
    "calibrate_flow",
    "check_inputs",
    "check_move",
    "clip_dynamic_degree",
    "clip_length_frames",
    "clip_spans",
    "consecutive_mae",
    "consistency_terms",
    "dis_flow",
    "dynamic_degree_params",
    "evaluate_video",
    "evaluate_videos",
    "farneback_flow",
    "first_previous_consistency",
    "flow_interpolator",
    "freeze_fraction",
    "iter_clips",
    "iter_frames",
    "markdown_report",
    "metric_name",
    "motion_smoothness",
    "plot_memory_timeline",
    "probe_video",
    "read_trace",
    "read_video",
    "resolve_backends",
    "run_eval",
    "start_end_drift",
    "temporal_flickering",
    "time_curve",
    "translated_pair",
    "world_sidecar",
    "write_report",
    "write_video",
]
