"""Waiting for something a test expects, with a deadline instead of a fixed sleep."""

import threading
import time


def until(check, timeout: float = 10.0, what: str = "the condition", step: float = 0.02) -> None:
    """Return once check() is true; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(step)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def subscribed(client, topic: str, qos: int = 1, timeout: float = 10.0) -> None:
    """Subscribe a started paho client and return once the broker has acknowledged it: a
    message published before the SUBACK may reach no one (nothing retained is sent again)."""
    done = threading.Event()
    before = client.on_subscribe

    def on_subscribe(*args):
        done.set()
        if before is not None:
            before(*args)

    client.on_subscribe = on_subscribe
    try:
        client.subscribe(topic, qos=qos)
        if not done.wait(timeout):
            raise AssertionError(f"the broker did not acknowledge the subscription to {topic} "
                                 f"within {timeout} s")
    finally:
        client.on_subscribe = before
