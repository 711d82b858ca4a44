"""Checks on what clients send; each refusal is an ApiError with the status the API documents.

400: the body is not JSON (or nested deeper than the parser's recursion limit). 413: the body has more bytes than max_body_bytes (werkzeug, before parsing).
415: the body is compressed (a Content-Encoding other than identity; service.app refuses it before any route).
422: JSON that breaks the documented schema: missing or unknown field, wrong type, an empty list, more
texts than max_texts, a text longer than max_text_chars. (Too many texts is 422, not 413, because it is
the schema's maxItems that is broken, as for any other schema violation; 413 stays a byte limit.)
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from service.errors import ApiError


@dataclass(frozen=True)
class TextLimits:
    max_texts: int
    max_text_chars: int


def parse_json_object(body: bytes, required: Iterable[str], allowed: Iterable[str]) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the request body is not valid JSON") from None
    except RecursionError:  # [[[[... deeper than the interpreter's recursion limit: json raises, not a 500
        raise ApiError(400, "the request body is JSON nested too deeply to read") from None
    if not isinstance(payload, dict):
        raise ApiError(422, "the request body must be a JSON object")
    missing = [key for key in required if key not in payload]
    if missing:
        raise ApiError(422, f"missing field: {', '.join(missing)}")
    unknown = sorted(set(payload) - set(allowed))
    if unknown:
        raise ApiError(422, f"unknown field: {', '.join(unknown)}")
    return payload


def validated_texts(texts: Any, limits: TextLimits, field: str = "texts") -> list[str]:
    if not isinstance(texts, list):
        raise ApiError(422, f"{field} must be a list of strings")
    if not texts:
        raise ApiError(422, f"{field} must not be empty")
    if len(texts) > limits.max_texts:
        raise ApiError(422, f"{len(texts)} texts in one request; at most {limits.max_texts}")
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise ApiError(422, f"{field}[{index}] is not a string")
        if len(text) > limits.max_text_chars:
            raise ApiError(422, f"{field}[{index}] has {len(text)} characters; at most {limits.max_text_chars}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates parse as JSON but the tokenizer cannot read them
            raise ApiError(422, f"{field}[{index}] is not valid Unicode") from None
    return texts
