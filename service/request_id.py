"""Every request has an id: the client's X-Request-ID when it is a sane one, else a new one. It goes back in the
X-Request-ID header of every answer and in the body of every refusal, and every log line written while the request
is served carries it (service.redaction), so a client's report finds the server's detail."""
from __future__ import annotations

import re
import uuid

from flask import Flask, Response, g, has_request_context, request

HEADER = "X-Request-ID"
# What a proxy or a tracing client sends (UUIDs, hex trace ids, base64): no spaces, quotes or control characters.
SANE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+/=-]{0,127}")


def new_request_id() -> str:
    return uuid.uuid4().hex


def current_request_id() -> str:
    """This request's id (set on first use); "-" outside a request."""
    if not has_request_context():
        return "-"
    if "request_id" not in g:
        given = request.headers.get(HEADER, "")
        g.request_id = given if SANE_ID.fullmatch(given) else new_request_id()
    return g.request_id


def _take_request_id() -> None:
    current_request_id()  # returns None: a before_request hook that returns a value answers the request itself


def _send_request_id(response: Response) -> Response:
    response.headers[HEADER] = current_request_id()
    return response


def register_request_ids(app: Flask) -> None:
    app.before_request(_take_request_id)
    app.after_request(_send_request_id)
