"""Training utilities shared by the trainers (`apps/train_dit`, `apps/train_vae`) and reusable on their own.

- :mod:`ea_dit.training.checkpoint`: sharded, atomic, verified checkpoints (torch.distributed.checkpoint)
  and the run folder's config check;
- :mod:`ea_dit.training.metrics`: metrics.jsonl + TensorBoard, plots;
- :mod:`ea_dit.training.distributed`: torchrun process groups, DDP / FSDP2 wrapping, rank-independent noise;
- :mod:`ea_dit.training.optim`: LR warm-up + constant / cosine schedules, AdamW (fused where available).
"""

from ea_dit.training.checkpoint import (
    CheckpointError,
    check_run_config,
    latest_checkpoint,
    load_checkpoint,
    resume,
    save_checkpoint,
    write_run_config,
)
from ea_dit.training.distributed import DistContext, init_distributed
from ea_dit.training.metrics import MetricsLog, plot_metrics, read_metrics

__all__ = ["CheckpointError", "check_run_config", "latest_checkpoint", "load_checkpoint", "resume",
           "save_checkpoint", "write_run_config", "DistContext", "init_distributed", "MetricsLog",
           "plot_metrics", "read_metrics"]
