"""The README's main job end to end: synthetic data -> curation -> captions -> VAE -> DiT -> samples."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

DEMO = Path(__file__).resolve().parents[2] / "apps" / "demo"


@pytest.mark.slow
def test_demo_end_to_end_and_resume(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, str(DEMO), "--out", str(out), "--videos", "3", "--vae-steps", "2", "--dit-steps", "2"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    summary = json.loads((out / "summary.json").read_text())
    manifest = [json.loads(x) for x in (out / "data" / "manifest.jsonl").read_text().splitlines()]
    assert summary["clips"] == len(manifest) > 0
    assert summary["kept"] == sum(r["status"] == "kept" for r in manifest) > 0
    kept = [r for r in manifest if r["status"] == "kept" and r.get("type", "video") == "video"]
    assert kept and all(r["caption"].startswith("A video in which") for r in kept)
    for path in [*summary["samples"], *summary["plots"], out / "vae" / "final" / "config.json",
                 out / "dit" / "final" / "model.safetensors"]:
        assert Path(path).stat().st_size > 0, path
    assert len(summary["samples"]) >= 1
    # A second run finds every step done and only rewrites the summary.
    again = subprocess.run(cmd, check=True, capture_output=True, text=True)
    assert "train VAE" not in again.stdout and "curate" not in again.stdout
    assert json.loads((out / "summary.json").read_text()) == summary
