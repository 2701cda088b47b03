"""The shared executor logic (bounded in-flight imap / imap_unordered) over a fake out-of-order backend."""

import random

import pytest

from ea_data.curation.executors import Executor, LocalExecutor, own_executor


class Handle:
    def __init__(self, value):
        self.value, self.finished = value, False


class FakeBackend(Executor):
    """Runs `fn` at submit time; `_wait_any` finishes a random non-empty subset (out of order).

    `in_flight` counts submitted handles not yet finished (by `_wait_any` or `_result`).
    """

    def __init__(self, max_in_flight: int, seed: int = 0):
        self.max_in_flight = max_in_flight
        self.rng = random.Random(seed)
        self.in_flight = 0
        self.peak = 0
        self.closed = False

    def _submitter(self, fn):
        def submit(item):
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            return Handle(fn(item))

        return submit

    def _finish(self, handle):
        if not handle.finished:
            handle.finished = True
            self.in_flight -= 1

    def _wait_any(self, pending):
        pending = list(pending)
        self.rng.shuffle(pending)
        k = self.rng.randint(1, len(pending))
        for h in pending[:k]:
            self._finish(h)
        return pending[:k], pending[k:]

    def _result(self, handle):
        self._finish(handle)
        return handle.value

    def close(self):
        self.closed = True


@pytest.mark.parametrize("max_in_flight", [1, 3, 8])
def test_imap_keeps_input_order_and_bounds_in_flight(max_in_flight):
    ex = FakeBackend(max_in_flight)
    items = list(range(-20, 20))
    assert list(ex.imap(abs, items)) == [abs(i) for i in items]
    assert ex.peak == min(max_in_flight, len(items)) and ex.in_flight == 0


@pytest.mark.parametrize("max_in_flight", [1, 4])
def test_imap_unordered_gives_every_result_once(max_in_flight):
    ex = FakeBackend(max_in_flight, seed=3)
    items = list(range(50))
    out = list(ex.imap_unordered(lambda x: x * x, iter(items)))  # a one-shot iterator is enough
    assert sorted(out) == [x * x for x in items]
    assert out != sorted(out) or max_in_flight == 1  # the fake backend really completes out of order
    assert ex.peak <= max_in_flight and ex.in_flight == 0


def test_context_manager_closes_and_own_executor_keeps_a_given_one():
    with FakeBackend(2) as ex:
        assert list(ex.imap(str, [])) == []
    assert ex.closed
    given = FakeBackend(2)
    with own_executor(given, workers=4) as ex:
        assert ex is given
    assert not given.closed  # the caller's executor is the caller's to close
    with own_executor(None, workers=1) as ex:
        assert isinstance(ex, LocalExecutor) and list(ex.imap_unordered(abs, [-1, 2])) == [1, 2]  # inline
