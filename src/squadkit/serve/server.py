"""Running the app: a socket, uvicorn, threads; ``serve`` blocks like the CLI, ``serve_in_thread`` for tests."""

# No "from __future__ import annotations" here: FastAPI reads the endpoints' annotations at
# runtime, and the request models are built per app (their limits come from the settings).
import contextlib
import dataclasses
import socket
import threading
import time
from typing import Any, Iterator, Optional

from ..errors import SquadkitError
from ..serve_settings import ServeSettings

try:  # the serve extra: pip install "squadkit[serve]"
    from fastapi import FastAPI
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise SquadkitError(f"serving needs the serve extra: pip install 'squadkit[serve]' ({exc})") from None


from .app import _as_pipeline, create_app


# ---------------------------------------------------------------------------------------------
# running it
# ---------------------------------------------------------------------------------------------


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket, so 'port in use' is one clear error before any model is loaded."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno in (98, 48, 10048) else (exc.strerror or str(exc))
        raise SquadkitError(f"cannot listen on {host}:{port}: {reason}") from None
    sock.set_inheritable(True)
    return sock


def _uvicorn_server(app: FastAPI, settings: ServeSettings) -> Any:
    import uvicorn

    config = uvicorn.Config(
        app, log_level=settings.log_level, access_log=settings.access_log, lifespan="on",
        # uvicorn waits for requests in flight on SIGTERM; none can last longer than the request timeout
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 5,
    )
    return uvicorn.Server(config)


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(qa_or_model: Any = None, settings: Optional[ServeSettings] = None, index: Any = None, **overrides: Any) -> None:
    """Serve until SIGINT/SIGTERM (the ``squadkit serve`` command). Blocks.

    ``overrides`` replace fields of ``settings`` (``serve("model", port=9000)``). The port is bound
    and the model loaded before the server starts, so either failing is a SquadkitError here.
    Port 0 picks a free port; the URL is printed on stderr once the model is loaded.
    """
    import sys

    from ..defaults import DEFAULT_MODEL

    settings = dataclasses.replace(settings or ServeSettings(), **overrides).validate()
    qa_or_model = DEFAULT_MODEL if qa_or_model is None else qa_or_model
    sock = bind_socket(settings.host, settings.port)
    try:
        app = app_for(qa_or_model, settings, index=index)
        server = _uvicorn_server(app, settings)
        print(f"squadkit: serving {app.state.squadkit.model_name} at {url_of(sock)} (page: /, API docs: /docs)",
              file=sys.stderr, flush=True)
        server.run(sockets=[sock])
    finally:
        sock.close()


def app_for(qa_or_model: Any, settings: ServeSettings, index: Any = None) -> FastAPI:
    """The app exactly as ``squadkit serve`` makes it: threads pinned, the model loaded first (so its
    limits and calibration are in the request schema), then the app."""
    _set_threads(settings.threads)
    return create_app(_as_pipeline(qa_or_model, settings), settings, index=index)


def _set_threads(threads: Optional[int]) -> None:
    """Pin torch's intra-op threads. Process-wide, so only serve() does it, never create_app().

    On a machine shared with other work, torch's default (one thread per core, spinning at every
    barrier) can make each forward pass many times slower than one thread would.
    """
    if threads is None:
        return
    try:
        import torch
    except ImportError:  # an ONNX-only install: nothing to pin
        return
    torch.set_num_threads(threads)


@contextlib.contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0,
                    startup_timeout_s: float = 60.0) -> Iterator[str]:
    """Run ``app`` on a real uvicorn server in a background thread; yields its base URL.

    For tests, notebooks and benchmarks: port 0 picks a free port, and leaving the block stops
    the server the way SIGTERM would (requests in flight finish first).
    """
    settings: ServeSettings = app.state.squadkit.settings
    sock = bind_socket(host, port)
    server = _uvicorn_server(app, settings)
    server.install_signal_handlers = lambda: None  # uvicorn < 0.29 would try it off the main thread
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="squadkit-serve", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout_s
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=settings.request_timeout_s + 10)
        sock.close()

