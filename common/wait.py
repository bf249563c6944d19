"""Bounded waits and retries: the one way the project's Python (not the stdlib-only node agents) waits for
something to become true.

`until` polls a probe at a fixed interval until it returns something truthy, for at most `seconds`, and then
raises TimeoutError naming what was awaited and the last thing seen, so a failure says why rather than
"timed out". Exceptions in `retry_on` count as "not yet"; any other propagates at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import tenacity

T = TypeVar("T")


def until(probe: Callable[[], T], *, seconds: float, every: float, what: str,
          retry_on: tuple[type[BaseException], ...] = ()) -> T:
    last: list[str] = []

    def note(state: tenacity.RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome else None
        last[:] = [f"{type(err).__name__}: {err}" if err else f"got {state.outcome.result()!r}"]

    try:
        return tenacity.Retrying(
            stop=tenacity.stop_after_delay(seconds), wait=tenacity.wait_fixed(every),
            retry=tenacity.retry_if_exception_type(retry_on) | tenacity.retry_if_result(lambda r: not r),
            after=note,
        )(probe)
    except tenacity.RetryError:
        raise TimeoutError(f"{what} after {seconds:g} s" + (f" (last: {last[0]})" if last else "")) from None
