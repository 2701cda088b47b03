"""apps/generate with broken model files (issue 13): exit 2 with one line naming the file and the problem."""

import shutil

import pytest

from .conftest import load_app
from .test_apps import _generate_run


@pytest.mark.parametrize("what, says", [
    ("dit/final/model.safetensors", "is truncated"),
    ("vae/final/model.safetensors", "not a safetensors file"),
    ("dit/final/config.json", "not valid JSON"),
    ("text_encoder", "text encoder path"),
])
def test_generate_with_a_broken_model_file_names_it(tmp_path, tiny_models, capsys, what, says):
    run = _generate_run(tmp_path / "run", tiny_models)
    for link in ("vae/final", "text_encoder"):  # own copies, so the shared fixtures stay intact
        target = (run / link).resolve()
        (run / link).unlink()
        shutil.copytree(target, run / link)
    path = run / what
    if what == "text_encoder":
        shutil.rmtree(path)
        args = ["--text-encoder", str(run / "text_encodr")]
    else:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2] if "dit/final/model" in what
                         else b"garbage bytes, not weights" * 20 if what.endswith("safetensors") else data[:-5])
        args = []
    capsys.readouterr()
    assert load_app("generate").main(["--run", str(run), "--prompt", "a ball", "--steps", "1",
                                      "--out", str(tmp_path / "out"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert says in err and (what == "text_encoder" or str(path) in err), err
    assert not (tmp_path / "out").exists()
