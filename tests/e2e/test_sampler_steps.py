"""benchmarks/sampler_steps.py on a tiny random run: every case starts from the same noise."""

import importlib.util
import json
from pathlib import Path

import pytest

from .test_apps import _generate_run

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "sampler_steps.py"


@pytest.mark.slow
def test_sampler_steps_benchmark_uses_the_same_noise_for_every_case(tmp_path, tiny_models):
    spec = importlib.util.spec_from_file_location("sampler_steps", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    run = _generate_run(tmp_path / "run", tiny_models)
    assert bench.main(["--run", str(run), "--samplers", "dpmpp_2m", "ddim", "--steps", "2", "4", "--seeds", "1",
                       "--limit", "2", "--reference-steps", "4", "--out-dir", str(tmp_path / "res")]) == 0
    record = json.loads((tmp_path / "res" / "sampler_steps-cpu.json").read_text())
    rows = {(r["sampler"], r["steps"]): r for r in record["results"]}
    assert set(rows) == {("dpmpp_2m", 2), ("dpmpp_2m", 4), ("ddim", 2), ("ddim", 4)}
    assert all(r["n"] == 2 and 0 <= r["both"] <= 1 for r in rows.values())
    # The 4-step DPM-Solver++ case is the reference itself: same seeds, same latents.
    assert rows[("dpmpp_2m", 4)]["latent_rms_to_reference"] == 0
    assert rows[("ddim", 2)]["latent_rms_to_reference"] > 0
    assert record["config"]["frames"] == 5 and record["config"]["height"] == 32
