"""ea_data: video data curation and loading for EasyAnimate.

    from ea_data import detect_scenes, score_clip
    scenes = detect_scenes(path)   # Scene: start_frame, end_frame (exclusive), start_time, end_time, fps
    scores = score_clip(path, start_time, end_time, scorers=("motion", "text", "aesthetic"))
    loader = make_dataloader("shards/", LoaderConfig(resolution=512, num_frames=49))  # bucketed batches

CLI: `ea-data run INPUT_DIR OUTPUT_DIR` (split -> score -> filter -> shard, resumable). Test and demo
data: `python -m ea_data.synthetic OUT_DIR` (`--demo`: the demo world, `ea_data.synthetic.demo_caption`,
`HELD_OUT`). `ea_data.clip_eval.evaluate_clip(video, color, direction)` measures a generated demo clip
(colour present, direction and speed of motion); `match_rates` summarises many.
"""

from .buckets import BucketKey, aspect_ratio_buckets, nearest_bucket, token_batch_size, token_length_frames
from .curation import PipelineConfig
from .filters import FilterConfig, apply_filters
from .loader import BucketDataLoader, BucketedVideoDataset, LoaderConfig, make_dataloader
from .manifest import ClipRecord, append_jsonl, read_jsonl, write_jsonl
from .scenes import Scene, detect_scenes, split_scene_clips
from .scoring import build_scorers, score_clip, split_and_score
from .shards import ShardConfig, write_shards

__version__ = "0.1.0"

__all__ = [
    "BucketDataLoader", "BucketKey", "BucketedVideoDataset", "LoaderConfig", "aspect_ratio_buckets",
    "make_dataloader", "nearest_bucket", "token_batch_size", "token_length_frames",
    "Scene", "detect_scenes", "split_scene_clips", "build_scorers", "score_clip", "split_and_score",
    "ClipRecord", "read_jsonl", "write_jsonl", "append_jsonl", "FilterConfig", "apply_filters",
    "PipelineConfig", "ShardConfig", "write_shards",
    "__version__",
]
