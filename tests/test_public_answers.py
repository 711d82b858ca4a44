"""Nothing internal in a public answer: servers whose models fail in every way the tests can provoke (a model folder
that cannot load, a tracking server with credentials in its URL that does not answer, registered models that do not
exist), asked everything a client may ask, right or wrong. No answer (status line, headers, JSON, the status page)
holds a local path, the tracking server's address or credentials, or a traceback; every refusal carries a request
id. The detail is in the server's log and the admin API, with the credentials removed."""
from __future__ import annotations

import json
import re
import shutil
import socket
import time
from pathlib import Path

import pytest
import requests

from serving import REPO, gunicorn_server
from service import create_app
from service.app import shutdown

pytestmark = pytest.mark.slow

TOKEN = "admin-token-for-tests"
USER, PASSWORD = "alice", "s3cr3t-pw"
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]*\", line \d+"
                       r"|\b[A-Z][A-Za-z]+(?:Error|Exception)\b")  # a frame, or an exception's class name


@pytest.fixture(scope="module")
def broken_model_dir(tiny_model_dir, tmp_path_factory):
    """A Hugging Face folder without its weights: transformers fails naming the folder."""
    folder = tmp_path_factory.mktemp("broken") / "model"
    shutil.copytree(tiny_model_dir, folder)
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    return folder


@pytest.fixture(scope="module")
def dead_tracking_server():
    """A port that accepts connections and never answers: MLflow's requests time out."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


def forbidden(tmp_root: Path, dead_port: int | None = None) -> list[str]:
    """What no public answer may contain."""
    markers = [str(tmp_root), str(REPO), "/home", "/tmp", "/work", "sqlite:", "mlflow.db", USER, PASSWORD]
    if dead_port is not None:
        markers += [f"127.0.0.1:{dead_port}", f"port={dead_port}"]
    return markers


def request_plan(names: list[str]) -> list[tuple[str, str, dict]]:
    """(method, path, {"json"/"data"/"headers"}) for every endpoint, asked right and wrong."""
    infer = {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["a fine day"]}]}
    plan = [("GET", path, {}) for path in (
        "/", "/monitoring", "/openapi.json", "/openapi.yaml", "/metrics", "/v2", "/v2/health/live",
        "/v2/health/ready", "/no/such/route", "/v2/models/unknown", "/v2/models/unknown/ready", "/admin/models")]
    plan += [("GET", "/", {"headers": HTML}), ("GET", "/?model=unknown", {"headers": HTML}),
             ("POST", "/v2/repository/index", {}), ("POST", "/v2/repository/index", {"json": {"ready": True}}),
             ("POST", "/v2/repository/index", {"data": b"{"}), ("POST", "/v2/repository/index", {"json": {"x": 1}}),
             ("POST", "/predict", {"json": {"texts": ["a"]}}), ("POST", "/predict", {"data": b"{"}),
             ("POST", "/predict", {"json": {"texts": 5}}), ("POST", "/predict", {"json": {"texts": ["x"] * 100}}),
             ("POST", "/predict", {"json": {"texts": ["a"], "model": "unknown"}}),
             ("POST", "/predict", {"data": b"\x1f\x8b junk", "headers": {"Content-Encoding": "gzip"}}),
             ("POST", "/predict", {"data": b"x" * 70_000}), ("PUT", "/predict", {}), ("DELETE", "/v2", {}),
             ("OPTIONS", "/predict", {}), ("POST", "/admin/reload", {}),
             ("POST", "/admin/reload", {"headers": {"Authorization": "Bearer wrong"}}),
             ("GET", "/admin/models", {"headers": {"Authorization": "Basic x"}})]
    for name in names:
        plan += [("GET", f"/?model={name}", {}), ("GET", f"/?model={name}", {"headers": HTML}),
                 ("GET", f"/monitoring?model={name}", {}), ("GET", f"/v2/models/{name}", {}),
                 ("GET", f"/v2/models/{name}/ready", {}), ("GET", f"/v2/models/{name}/versions/7", {}),
                 ("GET", f"/v2/models/{name}/versions/7/ready", {}),
                 ("POST", "/predict", {"json": {"texts": ["a fine day"], "model": name}}),
                 ("POST", "/predict", {"json": {"texts": [""], "model": name, "extra": 1}}),
                 ("POST", f"/v2/models/{name}/infer", {"json": infer}),
                 ("POST", f"/v2/models/{name}/versions/7/infer", {"json": infer}),
                 ("POST", f"/v2/models/{name}/infer", {"data": b"not json"}),
                 ("POST", f"/v2/models/{name}/infer", {"json": {"inputs": []}}),
                 ("POST", f"/v2/models/{name}/infer", {"json": infer, "headers": {
                     "Inference-Header-Content-Length": "abc"}}),
                 ("POST", f"/v2/models/{name}/infer", {"json": {"inputs": [{**infer["inputs"][0], "shape": [10**6]}]}})]
    return plan


def as_text(status: int, headers, body: bytes) -> str:
    return f"{status}\n" + "\n".join(f"{k}: {v}" for k, v in headers.items()) + "\n" + body.decode("utf-8", "replace")


def leaks_in(what: str, text: str, markers: list[str]) -> list[str]:
    found = [f"{what}: {marker!r}" for marker in markers if marker in text]
    if match := TRACEBACK.search(text):
        found.append(f"{what}: traceback marker {match.group()!r}")
    return found


def check_answers(answers: list[tuple[str, int, dict, bytes]], markers: list[str]) -> None:
    leaks = []
    for what, status, headers, body in answers:
        text = as_text(status, headers, body)
        leaks += leaks_in(what, text, markers)
        assert status < 500 or status == 503, f"{what}: {text[:500]}"
        request_id = {k.lower(): v for k, v in headers.items()}.get("x-request-id")
        assert request_id, f"{what}: no X-Request-ID"
        if status >= 400 and " /v2/health/ready " not in what:  # that one answers the protocol's {"ready": false}
            refusal = json.loads(body)
            assert refusal["error"] and refusal["request_id"] == request_id, f"{what}: {text[:500]}"
    assert not leaks, "\n".join(leaks)


def ask_client(client, plan) -> list[tuple[str, int, dict, bytes]]:
    answers = []
    for method, path, options in plan:
        response = client.open(path, method=method, **options)
        answers.append((f"{method} {path} {options}"[:200], response.status_code, dict(response.headers),
                        response.get_data()))
    return answers


def ask_server(base: str, plan) -> list[tuple[str, int, dict, bytes]]:
    answers = []
    for method, path, options in plan:
        response = requests.request(method, f"{base}{path}", timeout=30, **options)
        answers.append((f"{method} {path} {options}"[:200], response.status_code, dict(response.headers),
                        response.content))
    return answers


def raw_answer(port: int, payload: bytes, wait_s: float = 10.0) -> bytes:
    """Everything the server sends back on one connection for ``payload`` until it closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as sock:
        sock.sendall(payload)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return received


def test_a_failing_registry_server_shows_nothing_internal(onnx_model_dir, broken_model_dir, dead_tracking_server,
                                                          tmp_path, tmp_path_factory):
    """Under gunicorn: a good model, a folder that fails to load, and a registered model behind a tracking server
    (credentials in its URL) that never answers."""
    dead_uri = f"http://{USER}:{PASSWORD}@127.0.0.1:{dead_tracking_server}"
    args = ["--model", f"good={onnx_model_dir}", "--model", f"broken={broken_model_dir}",
            "--model", "ghost=models:/ghost@champion", "--tracking-uri", dead_uri, "--workers", "1", "--threads", "4",
            "--set", "compute_threads=1", "--set", "max_body_bytes=65536", "--set", "read_header_timeout_s=1",
            "--set", "monitoring_interval_s=3600"]
    env = {"CONTINUAL_ADMIN_TOKEN": TOKEN, "MLFLOW_HTTP_REQUEST_TIMEOUT": "2", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    markers = forbidden(tmp_path_factory.getbasetemp(), dead_tracking_server)
    with gunicorn_server(args, tmp_path, env) as server:
        base, port = server["base"], server["port"]
        answers = ask_server(base, request_plan(["good", "broken", "ghost"]))
        check_answers(answers, markers)
        statuses = {what: status for what, status, _, _ in answers}
        assert statuses["POST /predict {'json': {'texts': ['a fine day'], 'model': 'broken'}}"] == 503
        assert statuses["POST /predict {'json': {'texts': ['a fine day'], 'model': 'good'}}"] == 200
        index = {entry["name"]: entry for entry in requests.post(f"{base}/v2/repository/index", timeout=10).json()}
        assert index["broken"]["state"] == index["ghost"]["state"] == "UNAVAILABLE"
        assert "failed to load" in index["broken"]["reason"] and "load-" in index["broken"]["reason"]

        # What gunicorn refuses before the app sees the request, and a head that never ends (408).
        for payload in (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n",
                        b"NOT A REQUEST\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nX-Half: "):
            raw = raw_answer(port, payload)
            head, _, body = raw.partition(b"\r\n\r\n")
            assert raw.startswith(b"HTTP/1.1 4"), raw[:200]
            refusal = json.loads(body)
            assert refusal["error"] and f"x-request-id: {refusal['request_id']}".encode() in head.lower(), raw[:300]
            assert not leaks_in(repr(payload[:40]), raw.decode("latin-1"), markers)

        # The detail is for the operator: in the admin API and in the log, without the credentials.
        admin = requests.get(f"{base}/admin/models", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()
        models = {entry["name"]: entry for entry in admin["models"]}
        assert models["broken"]["location"] == str(broken_model_dir)
        assert str(broken_model_dir) in models["broken"]["last_error"]
        assert models["good"]["serving"]["location"] == str(onnx_model_dir)
        assert admin["tracking_uri"] == f"http://***@127.0.0.1:{dead_tracking_server}"
        assert models["ghost"]["last_error"] and models["ghost"]["error_id"].startswith("load-")
        assert "***@127.0.0.1" in models["ghost"]["last_error"]
        refused = requests.post(f"{base}/predict", json={"texts": ["a"], "model": "ghost"}, timeout=10)
        assert refused.status_code == 503 and models["ghost"]["error_id"] in refused.json()["error"]
        time.sleep(0.5)  # the access log line
        log = server["log"].read_text()
    assert USER not in log and PASSWORD not in log, "credentials in the server's log"
    assert "***@127.0.0.1" in log and models["ghost"]["error_id"] in log and models["broken"]["error_id"] in log
    assert refused.headers["X-Request-ID"] in log  # a client's report finds the server's line


def test_models_missing_from_a_live_registry_and_a_broken_folder_show_nothing_internal(
        broken_model_dir, tmp_path, tmp_path_factory):
    """In-process, a sqlite registry that answers: a registered model that does not exist (by alias and by version)
    and a folder that fails to load; then a server of that folder alone, started waiting for it."""
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    markers = forbidden(tmp_path_factory.getbasetemp())
    app = create_app({"models": {"nobody": "models:/nobody@champion", "noversion": "models:/nobody/3",
                                 "broken": str(broken_model_dir)}, "tracking_uri": tracking, "poll_seconds": 3600,
                      "admin_token": TOKEN, "compute_threads": 1, "max_body_bytes": 65536})
    try:
        check_answers(ask_client(app.test_client(), request_plan(["nobody", "noversion", "broken"])), markers)
        admin = app.test_client().get("/admin/models", headers={"Authorization": f"Bearer {TOKEN}"}).get_json()
        assert admin["tracking_uri"] == tracking  # the operator sees where it looked
        assert {m["name"]: m["awaiting_registration"] for m in admin["models"]} == {
            "nobody": True, "noversion": True, "broken": False}
    finally:
        shutdown(app)

    app = create_app({"model_uri": str(broken_model_dir), "poll_seconds": 3600, "compute_threads": 1,
                      "max_body_bytes": 65536})
    try:
        answers = ask_client(app.test_client(), request_plan(["broken"]))
        check_answers(answers, markers)
        assert app.test_client().get("/").get_json()["model"] is None
    finally:
        shutdown(app)


def test_a_sane_request_id_is_kept_and_any_other_replaced(onnx_model_dir):
    app = create_app({"model_uri": str(onnx_model_dir), "compute_threads": 1, "monitoring": False})
    try:
        client = app.test_client()
        kept = client.post("/predict", data=b"{", headers={"X-Request-ID": "trace-0af7651916cd43dd8448eb211c80319c"})
        assert kept.headers["X-Request-ID"] == kept.get_json()["request_id"] == "trace-0af7651916cd43dd8448eb211c80319c"
        for insane in ("has space", "x" * 200, "quote\"d", "<script>"):
            answer = client.get("/v2/models/unknown", headers={"X-Request-ID": insane})
            assert answer.headers["X-Request-ID"] == answer.get_json()["request_id"] != insane
            assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["X-Request-ID"])
        assert client.get("/v2/health/live").headers["X-Request-ID"]  # success carries one too
        source = client.post("/predict", json={"texts": ["a"]}).get_json()["model"]["source"]
        assert source is None  # a local folder: never its path
    finally:
        shutdown(app)


def test_redaction_removes_credentials_and_signatures():
    from service.redaction import public_uri, redact

    text = ("API request to http://alice:pw@host:5000/api failed; s3 https://b.s3.amazonaws.com/m?X-Amz-Signature=abc"
            "&X-Amz-Credential=AKIA/x&other=1 and postgresql://u:p@db/mlflow?password=z")
    assert redact(text) == ("API request to http://***@host:5000/api failed; s3 https://b.s3.amazonaws.com/m?"
                            "X-Amz-Signature=***&X-Amz-Credential=***&other=1 and postgresql://***@db/mlflow?"
                            "password=***")
    assert [public_uri(u) for u in ("models:/m@champion", "models:/m/3", "runs:/abc/model", "s3://bucket/m",
                                    "file:///tmp/m", "/tmp/m", "http://h/m", "models://host/m")] == [
        "models:/m@champion", "models:/m/3", "runs:/abc/model", None, None, None, None, None]


def test_redaction_leaves_hostile_and_long_texts_without_credentials_as_they_are():
    """Every log line goes through redact, access-log lines with client-chosen headers too: texts that almost
    look like a URL with userinfo or a secret query come back unchanged, whatever their characters."""
    from service.redaction import redact

    for text in ("a." * 10_000, "?" + "token" * 4_000, "&" + "a-" * 10_000, "x" * 20_000 + "://",
                 "line\u0085next\u2028sep\x00nul 🎉 שלום", "http\u2028://u:p@h/"):
        assert redact(text) == text
    long = "é" * 20_000 + " http://alice:pw@host/x?token=abc " + "\u2028" * 10
    assert redact(long) == "é" * 20_000 + " http://***@host/x?token=*** " + "\u2028" * 10
