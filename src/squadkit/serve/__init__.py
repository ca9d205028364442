"""Serve a QA model over HTTP: a FastAPI app with micro-batching, limits and a page to try it.

    >>> from squadkit.serve import ServeSettings, create_app, serve
    >>> serve("path/to/checkpoint", ServeSettings(port=8000))          # blocks, like the CLI
    >>> app = create_app(qa, ServeSettings(max_batch_size=16))         # or mount it yourself

Endpoints: ``POST /v1/answer``, ``POST /v1/answer/batch``, ``GET /healthz``, ``GET /readyz``,
``GET /v1/model``; with an index ``POST /v1/ask``, ``GET /v1/index``, ``GET /v1/documents/{id}``;
``GET /`` a page to try the model (the schema: ``/openapi.json``, ``/docs``). How it is built and
why: docs/serve.md.
"""

from ..http_contract import ErrorBody
from ..serve_settings import RequestOptions, ServeSettings
from .app import Admission, ServerState, _as_pipeline, create_app
from .batching import MicroBatcher, NotAccepting, QueueFull
from .schema import RequestLimits, request_limits, request_models
from .server import app_for, bind_socket, serve, serve_in_thread, url_of

__all__ = ["Admission", "ErrorBody", "MicroBatcher", "NotAccepting", "QueueFull", "RequestLimits", "RequestOptions",
           "ServeSettings", "ServerState", "_as_pipeline", "app_for", "bind_socket", "create_app", "request_limits",
           "request_models", "serve", "serve_in_thread", "url_of"]
