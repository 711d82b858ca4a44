"""Slow and pipelining clients against the real server (gunicorn on 127.0.0.1, 2 workers x 4 threads): clients
that send half a request and wait must not stop anyone else, are cut off after the read timeouts, and pipelined
requests are all answered, in order (service.gunicorn_worker, service.request_buffer)."""
from __future__ import annotations

import json
import socket
import time
from contextlib import ExitStack

import pytest
import requests

from serving import gunicorn_server
from service.request_buffer import Stage, scan_request

PREDICT = json.dumps({"texts": ["a fine day"]}).encode()
HEADER_TIMEOUT_S, BODY_TIMEOUT_S = 1.0, 1.5  # the cut-off server's; the other one holds slow clients 60 s


def server_args(model_dir, header_s: float, body_s: float) -> list[str]:
    return ["--model-uri", str(model_dir), "--workers", "2", "--threads", "4", "--set", "compute_threads=1",
            "--set", "monitoring=false", "--set", f"read_header_timeout_s={header_s}",
            "--set", f"read_body_timeout_s={body_s}"]


@pytest.fixture(scope="module")
def patient_server(onnx_model_dir, tmp_path_factory):
    with gunicorn_server(server_args(onnx_model_dir, 60, 60), tmp_path_factory.mktemp("patient")) as running:
        yield running


@pytest.fixture(scope="module")
def strict_server(onnx_model_dir, tmp_path_factory):
    args = server_args(onnx_model_dir, HEADER_TIMEOUT_S, BODY_TIMEOUT_S)
    with gunicorn_server(args, tmp_path_factory.mktemp("strict")) as running:
        yield running


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def predict_request(body: bytes = PREDICT, extra: str = "") -> bytes:
    return (f"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n{extra}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def half_head() -> bytes:
    return predict_request()[:30]


def half_body() -> bytes:
    body = b'{"texts": ["' + b"x" * 980 + b'"]}'  # 1,000 bytes; 500 of them sent
    return predict_request(body)[:-500]


def read_response(stream) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length from a socket's file: status, headers (lower-case), body."""
    status_line = stream.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    headers = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, stream.read(int(headers.get("content-length", 0)))


def still_open(sock: socket.socket) -> bool:
    """Nothing from the server, not even its close: a read would still block."""
    sock.setblocking(False)  # with a timeout, recv would first wait for data
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def time_to_close(sock: socket.socket, limit_s: float) -> tuple[float, bytes]:
    """Seconds until the server closes ``sock`` (reading whatever it sent first), and what it sent."""
    started, received = time.monotonic(), b""
    sock.settimeout(limit_s)
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return time.monotonic() - started, received


def test_slow_clients_do_not_stop_the_others(patient_server):
    """32 clients with half their headers sent and 8 with half their body (Content-Length 1,000), all waiting:
    20 requests from another client are each answered within a few seconds, the slow ones still held."""
    port, base = patient_server["port"], patient_server["base"]
    with ExitStack() as stack:
        slow = []
        for payload in [half_head()] * 32 + [half_body()] * 8:
            sock = stack.enter_context(connect(port))
            sock.sendall(payload)
            slow.append(sock)
        time.sleep(0.5)  # every slow client is accepted and read
        for index in range(20):  # a new connection each: either worker may take it
            started = time.monotonic()
            if index % 2:
                answer = requests.get(f"{base}/v2/health/ready", timeout=5)
            else:
                answer = requests.post(f"{base}/predict", json={"texts": [f"request {index}"]}, timeout=5)
            assert answer.status_code == 200, answer.text
            assert time.monotonic() - started < 3
        assert all(still_open(sock) for sock in slow)


def test_pipelined_requests_are_answered_in_order(patient_server):
    with connect(patient_server["port"]) as sock, sock.makefile("rb") as stream:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\n\r\n" + predict_request()
                     + b"GET /no/such/route HTTP/1.1\r\nHost: test\r\n\r\n")
        first, second, third = (read_response(stream) for _ in range(3))
        assert first[0] == 200 and json.loads(first[2]) == {"live": True}
        assert second[0] == 200 and len(json.loads(second[2])["predictions"]) == 1
        assert third[0] == 404 and "error" in json.loads(third[2])
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: test\r\n\r\n")  # the connection is still usable
        assert read_response(stream)[0] == 200


def test_a_request_sent_in_pieces_is_served(patient_server):
    """Head, then the body in two parts; a chunked body; Expect: 100-continue gets its 100 before the body."""
    with connect(patient_server["port"]) as sock, sock.makefile("rb") as stream:
        request = predict_request()
        for piece in (request[:40], request[40:-10], request[-10:]):
            sock.sendall(piece)
            time.sleep(0.2)
        assert read_response(stream)[0] == 200

        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n" + f"{len(PREDICT) - 5:x}\r\n".encode() + PREDICT[:-5]
                     + b"\r\n")
        time.sleep(0.2)
        sock.sendall(b"5\r\n" + PREDICT[-5:] + b"\r\n0\r\n\r\n")
        status, _, body = read_response(stream)
        assert status == 200 and len(json.loads(body)["predictions"]) == 1

        head, body = predict_request(extra="Expect: 100-continue\r\n").split(b"\r\n\r\n", 1)
        sock.sendall(head + b"\r\n\r\n")
        assert stream.readline() == b"HTTP/1.1 100 Continue\r\n" and stream.readline() == b"\r\n"
        sock.sendall(body)
        assert read_response(stream)[0] == 200


def test_a_body_over_the_limit_is_refused_unread_and_its_connection_closed(patient_server):
    """Content-Length 8 MiB against the 4 MiB limit, 64 KiB of it sent: the 413 comes at once, says Connection: close
    and the connection closes, without the server waiting for (or reading) the rest of the body."""
    with connect(patient_server["port"]) as sock, sock.makefile("rb") as stream:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 8388608\r\n\r\n" + b"x" * 65536)
        sock.settimeout(5)
        status, headers, body = read_response(stream)
        assert status == 413 and headers["connection"] == "close" and json.loads(body)["request_id"]
        seconds, _ = time_to_close(sock, 5)
        assert seconds < 4


def test_a_large_body_costs_little_cpu(patient_server):
    """A 4 MiB body (the limit) refused by the schema, and 4 MiB of empty binary tensor elements (more than max_texts):
    each refusal costs the workers a small fraction of a second of CPU. Guards two things: the worker hands the app
    the buffered body from memory (gunicorn's own reader copies the rest of the body for every KiB it returns), and
    the binary elements are counted against the shape before they are decoded."""
    import psutil

    workers = psutil.Process(patient_server["pid"]).children()

    def cpu() -> float:
        return sum(sum(worker.cpu_times()[:2]) for worker in workers)

    limit = 4 * 1024 * 1024
    count = (limit - 300) // 4
    header = json.dumps({"inputs": [{"name": "text", "shape": [count], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": 4 * count}}]}).encode()
    texts = (limit - 200) // 3
    cases = [({}, json.dumps({"texts": [""] * texts}, separators=(",", ":")).encode()),
             ({"Inference-Header-Content-Length": str(len(header))}, header + b"\0\0\0\0" * count)]
    session = requests.Session()
    for headers, body in cases:
        assert len(body) <= limit
        spent = []
        for _ in range(3):
            before = cpu()
            path = "/predict" if not headers else "/v2/models/classifier/infer"
            answer = session.post(f"{patient_server['base']}{path}", data=body, headers=headers, timeout=30)
            assert answer.status_code == 422 and "at most" in answer.json()["error"]
            spent.append(cpu() - before)
        assert min(spent) < 0.25, (headers, spent)


def test_slow_clients_are_cut_off(strict_server):
    """Past the read timeouts, a half-sent request gets a JSON 408 and its connection is closed; a client that
    trickles a byte at a time is cut as well, and one that never sends anything is closed without an answer."""
    port, limit = strict_server["port"], 1.0 + 2.5  # the loop looks at deadlines every second; then a linger
    with connect(port) as head_sock, connect(port) as body_sock, connect(port) as idle, connect(port) as trickle:
        head_sock.sendall(half_head())
        body_sock.sendall(half_body())
        for sock, timeout_s in ((head_sock, HEADER_TIMEOUT_S), (body_sock, BODY_TIMEOUT_S)):
            seconds, received = time_to_close(sock, timeout_s + limit)
            assert seconds < timeout_s + limit
            head, _, body = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in head, received
            assert "not received within" in json.loads(body)["error"]
        seconds, received = time_to_close(idle, limit)
        assert received == b"" and seconds < limit

        started, cut = time.monotonic(), False
        for byte in predict_request()[:-1]:  # 10 bytes a second: the whole request would take 14 s
            try:
                trickle.sendall(bytes([byte]))
            except OSError:
                cut = True
                break
            time.sleep(0.1)
        assert cut and time.monotonic() - started < HEADER_TIMEOUT_S + BODY_TIMEOUT_S + limit

    response = requests.get(f"{strict_server['base']}/v2/health/ready", timeout=5)  # the server is fine
    assert response.status_code == 200


@pytest.mark.parametrize("buffer, stage", [
    (b"GET / HTTP/1.1\r\nHost: a", Stage.HEAD),
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Stage.COMPLETE),
    (b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nab", Stage.BODY),
    (b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcdGET", Stage.COMPLETE),
    (b"POST / HTTP/1.1\r\nContent-Length: 40\r\n\r\n", Stage.HAND_OVER),  # over the body limit: not held
    (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", Stage.HAND_OVER),  # gunicorn refuses it
    (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", Stage.HAND_OVER),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n", Stage.HAND_OVER),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n", Stage.BODY),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n", Stage.COMPLETE),
    (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nab\r\n0\r\n\r\n", Stage.HAND_OVER),
    (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 10, Stage.HAND_OVER),  # over the head limit
])
def test_scan_request(buffer, stage):
    assert scan_request(buffer, head_limit=64, body_limit=16).stage is stage


def test_scan_request_finds_where_a_request_ends():
    first = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\nX-Sum: 1\r\n\r\n"
    assert scan_request(first + b"GET / HTTP/1.1", 1000, 16).end == len(first)
    scan = scan_request(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", 1000, 16)
    assert scan.stage is Stage.BODY and scan.expects_continue


def test_continual_serve_passes_the_serving_timeouts_from_params(tmp_path):
    from continual.cli.serving import monitoring_settings
    from continual.params import load_params
    from continual.workspace.layout import Workspace

    params = load_params()
    params["serving"].update(read_header_timeout_s=3, read_body_timeout_s=7)
    settings = monitoring_settings(Workspace.at(tmp_path), params)
    assert settings["read_header_timeout_s"] == 3 and settings["read_body_timeout_s"] == 7
