"""The ea-vae CLI's progress bar stays readable when stderr is a log, not a terminal."""

import io
import time

import pytest

from ea_vae import cli


class _Model:
    progress_callback = None


@pytest.mark.parametrize("tty", [False, True])
def test_bar_updates_rarely_off_a_terminal(monkeypatch, tty):
    pytest.importorskip("tqdm")
    err = io.StringIO()
    err.isatty = lambda: tty
    monkeypatch.setattr(cli.sys, "stderr", err)
    vae = _Model()
    with cli._progress(vae, "decode", enabled=True):
        for done in range(1, 101):  # 100 slices over about a second
            time.sleep(0.01)
            vae.progress_callback(done, 100)
    redraws = err.getvalue().count("\r")
    if tty:
        assert redraws >= 5  # a terminal gets a live bar (redrawn every 0.1 s)
    else:
        assert redraws <= 3, err.getvalue()  # a log gets the first and last state, not one line per redraw
    assert vae.progress_callback is None  # the model's callback is restored
