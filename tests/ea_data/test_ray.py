"""The Ray runner on a local one-CPU Ray: same manifest and shards as the local runner."""

import pytest

from ea_data.cli import main
from ea_data.curation import PipelineConfig, ScoreConfig
from ea_data.curation import run as run_local
from ea_data.manifest import read_jsonl
from ea_data.shards import ShardConfig
from ea_data.synthetic import make_dataset

ray = pytest.importorskip("ray")


@pytest.mark.slow  # starting Ray takes ~15-30 s on a small machine
def test_ray_runner_matches_local_runner(tmp_path):
    import webdataset as wds

    from ea_data.ray_runner import RayExecutor
    from ea_data.ray_runner import run as run_ray

    root = tmp_path / "in"
    make_dataset(root, num_videos=2, num_images=1, seed=4)
    (root / "videos" / "zero.mp4").write_bytes(b"")
    cfg = PipelineConfig(score=ScoreConfig(scorers=("motion",)), shard=ShardConfig(fps=4.0, max_side=32),
                         progress=False)
    local = run_local(root, tmp_path / "local", cfg)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        with RayExecutor() as ex:  # uses the running Ray; results in input order / all of them
            assert list(ex.imap(abs, range(-5, 5))) == [abs(i) for i in range(-5, 5)]
            assert sorted(ex.imap_unordered(abs, range(-5, 5))) == sorted(abs(i) for i in range(-5, 5))
        remote = run_ray(root, tmp_path / "ray", cfg)
        assert main(["run", str(root), str(tmp_path / "cli"), "--runner", "ray", "--scorers", "motion", "--quiet",
                     "--shard-fps", "4", "--shard-max-side", "32"]) == 0
    finally:
        ray.shutdown()
    assert remote["files_processed"] == local["files_processed"] == 4 and remote["errors"] == 1
    expected = (tmp_path / "local" / "manifest.jsonl").read_text()
    assert (tmp_path / "ray" / "manifest.jsonl").read_text() == expected
    assert (tmp_path / "cli" / "manifest.jsonl").read_text() == expected
    assert any(r["status"] == "kept" for r in read_jsonl(tmp_path / "ray" / "manifest.jsonl"))
    for name in sorted(p.name for p in (tmp_path / "local" / "shards").glob("*.tar")):
        a = list(wds.WebDataset(str(tmp_path / "local" / "shards" / name), shardshuffle=False))
        b = list(wds.WebDataset(str(tmp_path / "ray" / "shards" / name), shardshuffle=False))
        assert [(s["__key__"], s["json"]) for s in a] == [(s["__key__"], s["json"]) for s in b]
