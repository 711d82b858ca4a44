"""Read each request body to its end before the response goes out, even when nobody needed it.

Measured with gunicorn 26.2's threaded worker: when a response leaves the request body unread (a 404 or
405 from routing, a refusal before the body was parsed), the next request on that keep-alive
connection stalls until the keep-alive timeout (2 s) and the connection is then dropped, so a
``requests.Session`` client gets a ConnectionError on an innocent request. Draining here avoids it.

Only a body within the app's limit (max_body_bytes) is drained: a larger one is refused (413) unread, and
service.gunicorn_worker closes its connection after the answer, so no byte past the limit is read.
"""
from __future__ import annotations

from flask import Flask, Response, current_app, request

CHUNK_BYTES = 64 * 1024


def drain_request_body(response: Response) -> Response:
    length = request.content_length
    limit = current_app.config.get("MAX_CONTENT_LENGTH")
    if not length or (limit is not None and length > limit):
        return response
    stream = request.stream  # werkzeug's view: already at its end if the route read the body
    try:
        while stream.read(CHUNK_BYTES):
            pass
    except OSError:  # the socket's read timeout (service.gunicorn_worker): gunicorn closes the connection
        pass
    return response


def register_body_drain(app: Flask) -> None:
    app.after_request(drain_request_body)
