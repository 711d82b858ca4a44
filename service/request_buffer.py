"""How much of an HTTP/1.1 request a buffer holds: the framing rules only, for service.gunicorn_worker.

The worker reads each request into memory before a thread serves it, so it must know where a request ends:
after the head's blank line, plus Content-Length bytes or the chunked body's last chunk and trailers.
Anything this scan cannot frame (a malformed length, an oversized head or body) is handed to gunicorn's own
parser as it stands, which refuses it or reads the rest itself.
"""
from __future__ import annotations

import enum
from typing import NamedTuple

MAX_CHUNK_LINE = 4096  # a chunk-size line with extensions; longer is not a real client
HEX_DIGITS = b"0123456789abcdefABCDEF"


class Stage(enum.Enum):
    HEAD = "head"            # the head has not ended yet
    BODY = "body"            # head complete, body not yet
    COMPLETE = "complete"    # one whole request: buffer[:end]
    HAND_OVER = "hand over"  # not framed here: gunicorn's parser decides (refusal or a large body it reads)


class Scan(NamedTuple):
    stage: Stage
    end: int = 0                    # COMPLETE: where the request ends (a pipelined one may follow); BODY with
                                    # Content-Length: where it will end (no use scanning again before then)
    expects_continue: bool = False  # Expect: 100-continue: the client waits for "100 Continue" to send the body


def scan_request(buffer: bytes | bytearray, head_limit: int, body_limit: int) -> Scan:
    """Where the first request in ``buffer`` stands. ``head_limit``, ``body_limit``: bytes the caller is
    willing to hold; beyond them the request is handed over unread."""
    head_end = _head_end(buffer)
    if head_end < 0:
        return Scan(Stage.HAND_OVER) if len(buffer) > head_limit else Scan(Stage.HEAD)
    headers = _headers(bytes(buffer[:head_end]))
    if headers is None:
        return Scan(Stage.HAND_OVER)
    expects_continue = any(value.lower() == "100-continue" for value in headers.get("expect", []))
    if "transfer-encoding" in headers:
        codings = ",".join(headers["transfer-encoding"]).lower().split(",")
        if "content-length" in headers or codings[-1].strip() != "chunked":
            return Scan(Stage.HAND_OVER)  # gunicorn refuses both (request smuggling)
        end = _chunked_end(buffer, head_end, body_limit)
    else:
        lengths = {value.strip() for value in headers.get("content-length", ["0"])}
        if len(lengths) != 1 or not (length := lengths.pop()).isdigit() or not length.isascii():
            return Scan(Stage.HAND_OVER)
        if int(length) > body_limit:
            return Scan(Stage.HAND_OVER)
        end = head_end + int(length)
        if end > len(buffer):
            return Scan(Stage.BODY, end, expects_continue)
    if end is None:
        return Scan(Stage.BODY, expects_continue=expects_continue)
    if end < 0:
        return Scan(Stage.HAND_OVER)
    return Scan(Stage.COMPLETE, end, expects_continue)


def _head_end(buffer: bytes | bytearray) -> int:
    """Index just past the blank line that ends the head, or -1 (a bare-LF head ends too: gunicorn refuses it)."""
    crlf = buffer.find(b"\r\n\r\n")
    lf = buffer.find(b"\n\n", 0, crlf if crlf >= 0 else len(buffer))
    return lf + 2 if lf >= 0 else crlf + 4 if crlf >= 0 else -1


def _headers(head: bytes) -> dict[str, list[str]] | None:
    lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon:
            return None
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return headers


def _chunked_end(buffer: bytes | bytearray, start: int, body_limit: int) -> int | None:
    """End of a chunked body (its trailers included); None: not all here yet; -1: malformed or too large."""
    position = start
    while True:
        line_end = buffer.find(b"\r\n", position, position + MAX_CHUNK_LINE)
        if line_end < 0:
            return None if len(buffer) - position < MAX_CHUNK_LINE else -1
        size_text = bytes(buffer[position:line_end]).split(b";")[0].strip()
        if not size_text or size_text.strip(HEX_DIGITS):
            return -1
        size = int(size_text, 16)
        if position + size - start > body_limit:
            return -1
        if size == 0:
            trailers = line_end + 2
            if buffer[trailers:trailers + 2] == b"\r\n":
                return trailers + 2
            end = buffer.find(b"\r\n\r\n", trailers)
            return end + 4 if end >= 0 else None
        data_end = line_end + 2 + size
        if len(buffer) < data_end + 2:
            return None
        if buffer[data_end:data_end + 2] != b"\r\n":
            return -1
        position = data_end + 2
