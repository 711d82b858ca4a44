"""Every error leaves the service as JSON ``{"error": "..."}``; never an HTML page or a stack trace."""
from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """A request the service refuses, with the status that says why."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None):
    response = jsonify(error=message)
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
        response.set_data(jsonify(error=error.description or error.name).get_data())
        response.content_type = "application/json"
        return response

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal server error")
