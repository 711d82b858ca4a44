"""The Open Inference Protocol (KServe V2) tensors of this model: texts in, labels and probabilities out.

Input: one tensor ``text``, datatype BYTES, shape [N] (or [N, 1]). Its data comes either as JSON
strings or, as tritonclient sends it by default, in Triton's binary tensor extension: the body is
the JSON header (its length in the Inference-Header-Content-Length header) followed by the raw
tensor, each BYTES element a 4-byte little-endian length and then its bytes. Outputs are JSON.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from service.backends import PLATFORMS, Prediction, ServedModel
from service.errors import ApiError
from service.inputs import TextLimits, parse_json_object, validated_texts

INPUT_NAME = "text"
OUTPUT_DATATYPES = {"label": "BYTES", "probabilities": "FP32", "truncated": "BOOL"}


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    texts: list[str]
    outputs: list[str]  # the output tensors asked for, in order


def model_metadata(name: str, model: ServedModel) -> dict[str, Any]:
    return {
        "name": name,
        "versions": [model.card.version] if model.card.version else [],
        "platform": PLATFORMS[model.backend.name],
        "inputs": [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(model.labels)]},
            {"name": "truncated", "datatype": "BOOL", "shape": [-1]},
        ],
        "backend": {"name": model.backend.name, "reason": model.backend.reason},  # which backend serves, and why
    }


def parse_infer_request(body: bytes, header_length: str | None, limits: TextLimits) -> InferRequest:
    json_part, binary_part = _split_body(body, header_length)
    payload = parse_json_object(json_part, required=["inputs"], allowed=["id", "parameters", "inputs", "outputs"])
    request_id = payload.get("id")
    if "id" in payload and not isinstance(request_id, str):
        raise ApiError(422, "id must be a string")
    if not isinstance(payload.get("parameters", {}), dict):
        raise ApiError(422, "parameters must be an object")
    inputs = payload["inputs"]
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ApiError(422, f"inputs must hold exactly one tensor object, {INPUT_NAME!r}")
    texts = _input_texts(inputs[0], binary_part, limits)
    outputs = _requested_outputs(payload["outputs"]) if "outputs" in payload else list(OUTPUT_DATATYPES)
    return InferRequest(request_id, texts, outputs)


def infer_response(name: str, model: ServedModel, request: InferRequest,
                   predictions: list[Prediction]) -> dict[str, Any]:
    count, width = len(predictions), len(model.labels)
    tensors = {
        "label": ([count], [p.label for p in predictions]),
        "probabilities": ([count, width], [value for p in predictions for value in p.probabilities]),
        "truncated": ([count], [p.truncated for p in predictions]),
    }
    response: dict[str, Any] = {
        "model_name": name,
        "model_version": model.card.version or "",
        "outputs": [
            {"name": output, "datatype": OUTPUT_DATATYPES[output], "shape": tensors[output][0], "data": tensors[output][1]}
            for output in request.outputs
        ],
    }
    if request.id is not None:
        response["id"] = request.id
    return response


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        raise ApiError(400, "Inference-Header-Content-Length is not an integer") from None
    if not 0 <= length <= len(body):
        raise ApiError(400, "Inference-Header-Content-Length is larger than the body")
    return body[:length], body[length:]


def _input_texts(tensor: dict[str, Any], binary: bytes, limits: TextLimits) -> list[str]:
    if tensor.get("name") != INPUT_NAME:
        raise ApiError(422, f"unknown input {tensor.get('name')!r}; this model takes {INPUT_NAME!r}")
    if tensor.get("datatype") != "BYTES":
        raise ApiError(422, f"input {INPUT_NAME!r} must have datatype BYTES")
    shape = tensor.get("shape")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= 2
            or not all(isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in shape)
            or (len(shape) == 2 and shape[1] != 1)):
        raise ApiError(422, "shape must be [N] or [N, 1]")
    parameters = tensor.get("parameters", {})
    if not isinstance(parameters, dict):
        raise ApiError(422, "input parameters must be an object")
    if shape[0] > limits.max_texts:  # before any element is read: the refusal costs no more than the header
        raise ApiError(422, f"{shape[0]} texts in one request; at most {limits.max_texts}")
    binary_size = parameters.get("binary_data_size")
    if binary_size is not None:
        data = _decode_binary_bytes(binary, binary_size, shape[0])
    else:
        data = tensor.get("data")
        if not isinstance(data, list):
            raise ApiError(422, "data must be a list of strings")
        if len(shape) == 2 and all(isinstance(row, list) and len(row) == 1 for row in data):
            data = [row[0] for row in data]  # [N, 1] may come nested
    if len(data) != shape[0]:
        raise ApiError(422, f"shape says {shape[0]} texts, data holds {len(data)}")
    return validated_texts(data, limits, field="data")


def _decode_binary_bytes(binary: bytes, size: Any, count: int) -> list[str]:
    """The BYTES elements of the binary part; more than the ``count`` the shape declares is refused at the first
    element too many, before it is decoded."""
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= len(binary):
        raise ApiError(400, "binary_data_size does not match the binary part of the body")
    texts, offset, end = [], 0, size
    while offset < end:
        if len(texts) == count:
            raise ApiError(422, f"shape says {count} texts, the binary data holds more")
        if offset + 4 > end:
            raise ApiError(400, "truncated BYTES element in the binary data")
        (length,) = struct.unpack_from("<I", binary, offset)
        offset += 4
        if offset + length > end:
            raise ApiError(400, "truncated BYTES element in the binary data")
        try:
            texts.append(binary[offset:offset + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise ApiError(422, "a BYTES element is not UTF-8 text") from None
        offset += length
    return texts


def _requested_outputs(outputs: Any) -> list[str]:
    if not isinstance(outputs, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) and isinstance(o.get("parameters", {}), dict)
            for o in outputs):
        raise ApiError(422, "outputs must be a list of objects with a name (and optional parameters object)")
    names = [output["name"] for output in outputs]
    unknown = [name for name in names if name not in OUTPUT_DATATYPES]
    if unknown:
        raise ApiError(422, f"unknown output {unknown[0]!r}; this model has {', '.join(OUTPUT_DATATYPES)}")
    return names
