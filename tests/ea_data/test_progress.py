"""The progress bar's non-terminal settings."""

import io

from ea_data.progress import NON_TTY_INTERVAL, progress_bar


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_redraws_rarely_when_not_a_terminal():
    log = io.StringIO()
    with progress_bar(total=5000, file=log, desc="work") as bar:
        assert bar.mininterval == NON_TTY_INTERVAL >= 15 and bar.maxinterval >= NON_TTY_INTERVAL
        for _ in range(5000):
            bar.update()
    draws = [s for s in log.getvalue().split("\r") if s.strip()]
    assert len(draws) <= 3, draws  # first state, (at most one timed redraw), final state
    assert "5000/5000" in draws[-1]
    tty = progress_bar(total=10, file=_Tty())
    assert tty.mininterval < 1  # a terminal keeps tqdm's usual redraw rate
    tty.close()
    with progress_bar(total=1, file=io.StringIO(), mininterval=2) as explicit:
        assert explicit.mininterval == 2  # an explicit setting wins
