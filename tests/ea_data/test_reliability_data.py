"""ea-data on hostile but honest input (issue 13): model weight files that are truncated or not weights
are named with the problem, and every user-given config checks types and ranges naming the key."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from ea_core.files import WeightsFileError
from ea_data.curation.config import InputError, PipelineConfig, ScoreConfig, SplitConfig
from ea_data.filters import FilterConfig
from ea_data.loader import LoaderConfig
from ea_data.scoring.aesthetic import AestheticHead
from ea_data.shards import ShardConfig


@pytest.fixture
def head_files(tmp_path):
    torch.manual_seed(0)
    sd = AestheticHead(embed_dim=8).state_dict()
    torch.save(sd, tmp_path / "head.pth")
    save_file(sd, str(tmp_path / "head.safetensors"))
    return tmp_path, sd


@pytest.mark.parametrize("name", ["head.pth", "head.safetensors"])
def test_truncated_weights_name_the_file(head_files, name):
    d, sd = head_files
    head = AestheticHead.from_file(d / name)  # the intact file loads the file's weights
    torch.testing.assert_close(head.state_dict()["layers.0.weight"], sd["layers.0.weight"])
    path = d / name
    path.write_bytes(path.read_bytes()[:-200])
    says = "is truncated" if name.endswith(".safetensors") else "is truncated or not a torch weights file"
    with pytest.raises(WeightsFileError, match=says) as e:
        AestheticHead.from_file(path)
    assert str(path) in str(e.value)


def test_raft_weights_that_are_not_weights_name_the_file(tmp_path):
    pytest.importorskip("torchvision")
    from ea_data.scoring.motion import RaftMotion

    for name, data in (("raft.pth", b"<html>404 not found</html>"), ("raft.safetensors", b"\x00" * 3)):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(WeightsFileError, match=f"{name}: is (truncated|not)"):
            RaftMotion(tmp_path / name, "small", work_size=128)


@pytest.mark.parametrize("build, says", [
    (lambda: LoaderConfig(resolution="512"), "LoaderConfig.resolution: expected an integer, got '512'"),
    (lambda: LoaderConfig(resolutions=(256, 0)), "LoaderConfig.resolutions: must be > 0"),
    (lambda: LoaderConfig(shuffle="no"), "LoaderConfig.shuffle: expected true or false"),
    (lambda: LoaderConfig(prefetch_factor=0), "LoaderConfig.prefetch_factor: must be > 0"),
    (lambda: ShardConfig(size=(64, "x")), "ShardConfig.size: expected a list of 2 integers or None"),
    (lambda: ShardConfig(jpeg_quality=0), "ShardConfig.jpeg_quality: must be > 0"),
    (lambda: ShardConfig(crf=-1), "ShardConfig.crf: must be >= 0"),
    (lambda: FilterConfig(min_motion="2"), "FilterConfig.min_motion: expected a finite number or None"),
    (lambda: FilterConfig(max_text_area=2.0), "max_text_area: must be a fraction in"),
])
def test_data_configs_check_types_and_ranges(build, says):
    with pytest.raises(ValueError, match=says):
        build()


@pytest.mark.parametrize("build, says", [
    (lambda: SplitConfig(min_scene_len=1.5), "SplitConfig.min_scene_len: expected an integer"),
    (lambda: SplitConfig(threshold=-1.0), "SplitConfig.threshold: must be >= 0"),
    (lambda: ScoreConfig(sample_fps="2"), "ScoreConfig.sample_fps: expected a finite number"),
    (lambda: PipelineConfig(split={"detector": "adaptive"}), "PipelineConfig.split: expected SplitConfig"),
    (lambda: PipelineConfig(workers=1.5), "PipelineConfig.workers: expected an integer"),
])
def test_curation_configs_raise_input_errors(build, says):
    with pytest.raises(InputError, match=says):  # the CLI turns InputError into exit code 2
        build()
