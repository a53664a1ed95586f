"""Waiting for something a test expects, with a deadline instead of a fixed sleep."""

import time


def until(check, timeout: float = 10.0, what: str = "the condition", step: float = 0.02) -> None:
    """Return once check() is true; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(step)
    raise AssertionError(f"{what} did not happen within {timeout} s")
