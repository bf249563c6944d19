"""common/wait.py: the project's bounded wait (no timing is asserted; only what it returns and raises)."""

from __future__ import annotations

import itertools

import pytest

from common.wait import until


def test_returns_the_first_truthy_answer():
    calls = itertools.count(1)
    assert until(lambda: next(calls) >= 3 and "ready", seconds=5, every=0.01, what="x") == "ready"
    assert next(calls) == 4  # asked three times, no more


def test_gives_up_naming_what_and_the_last_answer():
    with pytest.raises(TimeoutError, match=r"the API ready after 0.05 s \(last: got False\)"):
        until(lambda: False, seconds=0.05, every=0.01, what="the API ready")


def test_listed_errors_mean_not_yet_and_are_reported():
    answers = iter([ConnectionError("refused"), ConnectionError("refused"), "up"])

    def probe():
        a = next(answers)
        if isinstance(a, Exception):
            raise a
        return a

    assert until(probe, seconds=5, every=0.01, what="s3", retry_on=(ConnectionError,)) == "up"
    with pytest.raises(TimeoutError, match=r"ssh after .* \(last: ConnectionError: refused\)"):
        until(lambda: (_ for _ in ()).throw(ConnectionError("refused")), seconds=0.05, every=0.01, what="ssh",
              retry_on=(ConnectionError,))


def test_other_errors_propagate_at_once():
    calls = itertools.count(1)

    def probe():
        next(calls)
        raise ValueError("bad config")

    with pytest.raises(ValueError, match="bad config"):
        until(probe, seconds=5, every=0.01, what="x", retry_on=(ConnectionError,))
    assert next(calls) == 2  # one call: not retried
