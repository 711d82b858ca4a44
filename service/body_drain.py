"""Read each request body to its end before the response goes out, even when nobody needed it.

Measured with gunicorn 26.2's threaded worker: when a response leaves the request body unread (a 404 or
405 from routing, a refusal before the body was parsed), the next request on that keep-alive
connection stalls until the keep-alive timeout (2 s) and the connection is then dropped, so a
``requests.Session`` client gets a ConnectionError on an innocent request. Draining here avoids it.
"""
from __future__ import annotations

from flask import Flask, Response, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wsgi import LimitedStream

DRAIN_LIMIT_BYTES = 16 * 1024 * 1024  # beyond this an upload is abuse; let its connection be dropped
CHUNK_BYTES = 64 * 1024


def drain_request_body(response: Response) -> Response:
    length = request.content_length
    if not length or length > DRAIN_LIMIT_BYTES:
        return response
    try:
        stream = request.stream  # werkzeug's view: already at its end if the route read the body
    except RequestEntityTooLarge:  # over max_body_bytes: werkzeug refused to open it, nothing was read
        stream = LimitedStream(request.environ["wsgi.input"], length)
    try:
        while stream.read(CHUNK_BYTES):
            pass
    except OSError:  # the socket's read timeout (service.gunicorn_worker): gunicorn closes the connection
        pass
    return response


def register_body_drain(app: Flask) -> None:
    app.after_request(drain_request_body)
