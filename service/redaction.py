"""Credentials out of every URL the server writes down: log lines, tracebacks, admin answers.

A tracking URI may carry a user and password (``http://user:pass@host``) and MLflow repeats it in its exception texts
("API request to http://user:pass@host/... failed"); a presigned artifact URL carries its signature in the query.
``redact`` removes both. ``install_log_redaction`` applies it to every log record this process creates (any logger,
MLflow's and gunicorn's included) and stamps each with the request id it was logged under.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable
from urllib.parse import urlsplit

# scheme://user[:password]@ -> scheme://***@ (the host stays: an operator needs to know which server failed).
# Linear in the text's length (a log line may quote a client's 8 KB header): each run of scheme characters is tried
# once, from its start, only when "://" ends it, and its first word-start letter begins the scheme (atomic group).
USERINFO = re.compile(r"(?i)(?<![a-z0-9+.\-])(?=[a-z0-9+.\-]*+://)(?>([a-z0-9+.\-]*?)\b([a-z][a-z0-9+.\-]*+://))"
                      r"[^/\s@'\"<>]+@")
# ?token=..., &X-Amz-Signature=..., ... -> the value replaced (the lookahead keeps it linear: only a key that "="
# ends is searched for a secret's name)
SECRET_QUERY = re.compile(r"(?i)([?&](?=[a-z0-9_\-]*+=)(?:[a-z0-9_\-]*(?:token|password|passwd|secret|signature|"
                          r"credential|api[_-]?key)[a-z0-9_\-]*|sig|key|code)=)[^&\s'\"<>]*")
# URIs that name a model without naming a host or a local file: these may be shown to anyone.
PUBLIC_SCHEMES = ("models", "runs")


def redact(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***``."""
    return SECRET_QUERY.sub(r"\1***", USERINFO.sub(r"\1\2***@", text))


def public_uri(uri: str | None) -> str | None:
    """``uri`` when it names a model by registry or run alone (models:/NAME@alias, models:/NAME/3, runs:/ID/path);
    None for anything that names a host, a bucket or a local file."""
    if not uri:
        return None
    parts = urlsplit(uri)
    return uri if parts.scheme in PUBLIC_SCHEMES and not parts.netloc else None


def _no_request() -> str:
    return "-"


_request_id: Callable[[], str] = _no_request


def install_log_redaction(request_id: Callable[[], str] | None = None) -> None:
    """Every log record of this process gets its message and traceback redacted at creation and a ``request_id``
    attribute (``request_id()``: the current request's id, "-" outside one; a later call may set it)."""
    global _request_id
    if request_id is not None:
        _request_id = request_id
    factory = logging.getLogRecordFactory()
    if getattr(factory, "redacting", False):
        return

    def make_record(*args, **kwargs) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        try:
            record.request_id = _request_id()
        except Exception:  # noqa: BLE001 - a log line must never fail for its id
            record.request_id = "-"
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - bad arguments: logging reports them when it formats the record
            return record
        record.msg, record.args = redact(message), None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return record

    make_record.redacting = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make_record)
