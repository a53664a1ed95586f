"""A real uvicorn server for an ASGI app, on a free loopback port the OS picks."""

import asyncio
import contextlib
import threading
import time

import uvicorn


@contextlib.contextmanager
def serve(app, *, lifespan: str = "on", port: int = 0):
    """Run the app under uvicorn on 127.0.0.1 (port 0: one the OS picks, no collision with
    other workers; a port from free_port() when the URL must be known before); yield its
    base URL; stop it after."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan=lifespan, ws="websockets-sansio",
                                           timeout_graceful_shutdown=1))
    server.install_signal_handlers = lambda: None
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start within 10 s")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def run_served(app, run, closing=()):
    """Serve the app, run the coroutine function `run(base_url)` against it and return its
    result; close each of `closing` (stores the test opened) afterwards, whatever happened."""
    try:
        with serve(app) as base:
            return asyncio.run(run(base))
    finally:
        for thing in closing:
            thing.close()
