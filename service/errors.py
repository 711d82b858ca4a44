"""Every error leaves the service as JSON ``{"error": "...", "request_id": "..."}``: a short reason anyone may read
and the id that finds the detail in the server's log. Never an HTML page, a stack trace or an exception's text."""
from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from service.request_id import current_request_id

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A request the service refuses, with the status that says why."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None):
    response = jsonify(error=message, request_id=current_request_id())
    response.status_code = status
    response.headers.update(headers or {})
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(error: ApiError):
        return error_response(error.status, error.message, error.headers)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        # Keep werkzeug's headers (Allow on 405), replace its HTML body.
        response = error.get_response()
        response.set_data(jsonify(error=error.description or error.name, request_id=current_request_id()).get_data())
        response.content_type = "application/json"
        return response

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        log.exception("unhandled error")  # the log line carries the request id (service.redaction)
        return error_response(500, "internal server error: the server's log has the detail under this request_id")
