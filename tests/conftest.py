"""Shared pytest setup: Triton's interpreter on machines without a GPU, and the `gpu` marker."""

import os

# Triton needs its interpreter on a machine with no GPU, and reads the variable when first imported.
if not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; this machine has none")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def rng():
    """A seeded torch Generator, so tests are deterministic."""
    return torch.Generator().manual_seed(0)
