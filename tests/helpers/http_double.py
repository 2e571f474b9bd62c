"""The lifecycle every HTTP double of a remote service shares: its FastAPI app under a
real uvicorn on a free loopback port, in a thread, until stopped."""

from __future__ import annotations

import threading
from typing import Self

import uvicorn
from fastapi import FastAPI

from buildkit.dev.procs import free_port, wait_until


class HttpDouble:
    """Subclasses build their app in :meth:`_app` and name themselves in ``service``."""

    service = "HTTP double"

    def __init__(self) -> None:
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def _app(self) -> FastAPI:
        raise NotImplementedError

    def start(self) -> Self:
        """Serve on a free port of 127.0.0.1 until :meth:`stop`."""
        port = free_port()
        config = uvicorn.Config(
            self._app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(target=server.run, name=self.service, daemon=True)
        self._thread.start()
        if not wait_until(lambda: server.started, 10):
            raise RuntimeError(f"the {self.service} did not start on port {port}")
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
