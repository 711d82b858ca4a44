"""Fuzzing: schemathesis on every endpoint, and the V2 tensors' shapes and datatypes by hand."""
from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from chaos_suite.common import BIN, ENV, log
from chaos_suite.soak import Server


V2_SHAPES = [None, [], [0], [1], [2], [-1], [1, 1], [2, 1], [1, 2], [2, 2], [1, 1, 1], [2**31], [2**63], ["2"],
             [1.5], [True], "2", {}, [None]]
V2_DATATYPES = [None, "BYTES", "FP32", "INT64", "BOOL", "STRING", "bytes", "", 5, ["BYTES"]]
V2_DATA = [["a", "b"], [], [["a"], ["b"]], "ab", None, [1, 2], [None, None], [{"a": 1}, {}], [["a", "b"]],
           [[["a"]], [["b"]]], [True, False], ["\ud800", "b"], ["x" * 20_000, "b"]]


def v2_cases(name: str) -> list[tuple[str, str, bytes, dict]]:
    """(method, path, body, headers): every shape x datatype x data combination, then odd bodies."""
    cases = []
    infer = f"/v2/models/{name}/infer"
    for shape in V2_SHAPES:
        for datatype in V2_DATATYPES:
            for data in V2_DATA:
                tensor = {"name": "text", "shape": shape, "datatype": datatype, "data": data}
                tensor = {k: v for k, v in tensor.items() if v is not None}
                body = json.dumps({"inputs": [tensor]}).encode("utf-8", "surrogatepass")
                cases.append(("POST", infer, body, {"Content-Type": "application/json"}))
    header = json.dumps({"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": 9}}]}).encode()
    binary = (5).to_bytes(4, "little") + b"hello"
    for length in ("-1", "0", str(len(header)), str(len(header) + 100), "x", "1e3", str(2**64)):
        for tail in (binary, binary[:6], b"", (2**32 - 1).to_bytes(4, "little") + b"a", b"\xff\xfe\xfd\xfc\xfb"):
            cases.append(("POST", infer, header + tail, {"Inference-Header-Content-Length": length}))
    odd = [b"", b"{", b"null", b"[]", b"\"x\"", b"1e999999", b"-" + b"9" * 5000, b"\xff\xfe", b"{\"inputs\": NaN}",
           ("{\"inputs\": " + "[" * 5000 + "]" * 5000 + "}").encode(), b"[" * 100_000 + b"]" * 100_000,
           b"{\"texts\": [\"a\"], \"texts\": 5}", ("{\"texts\": [\"" + "\\ud800" + "\"]}").encode(),
           json.dumps({"texts": ["a"] * 100_000}).encode(), b"{\"outputs\": [{\"name\": 5}], \"inputs\": []}"]
    for path in ("/predict", infer, f"/v2/models/{name}/versions/1/infer", "/admin/reload", "/v2/models/x/infer"):
        for body in odd:
            cases.append(("POST", path, body, {"Content-Type": "application/json"}))
    for path in ("/", "/v2", f"/v2/models/{name}", "/v2/models/%00", "/v2/models/" + "a" * 5000, "/predict",
                 "/v2/health/ready", "/openapi.json", "/nope", "/admin/reload?force=" + "x" * 3000):
        for method in ("GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"):
            cases.append((method, path, b"", {}))
    return cases


def section_fuzz(args, ctx: dict) -> dict:
    import requests

    work = ctx["work"] / "fuzz"
    work.mkdir(parents=True)
    server = Server(work, ["--model-uri", str(ctx["tiny"]), "--set", "max_texts=16", "--set", "max_text_chars=2000",
                           "--set", "max_body_bytes=262144"], workers=1, env={"CONTINUAL_ADMIN_TOKEN": "chaos-token"})
    result: dict[str, Any] = {}
    try:
        server.wait_ready()
        name = requests.get(f"{server.base}/", timeout=10).json().get("model", {}).get("name") or "classifier"
        # 1. schemathesis on every operation of the served document
        report = work / "schemathesis"
        command = [str(BIN / "st"), "run", f"{server.base}/openapi.json", "--checks", "all",
                   "--exclude-checks", "positive_data_acceptance", "--max-examples", str(args.fuzz_examples),
                   "--seed", str(args.seed), "--workers", "1", "--generation-database", "none",
                   "--phases", "examples,coverage,fuzzing", "--request-timeout", "20", "--no-color",
                   "--report", "har", "--report-dir", str(report)]
        began = time.perf_counter()
        st = subprocess.run(command, cwd=work, env=ENV, capture_output=True, text=True, timeout=1800)
        result["schemathesis_seconds"] = round(time.perf_counter() - began, 1)
        result["schemathesis_exit"] = st.returncode
        result["schemathesis_tail"] = st.stdout[-1500:]
        entries = []
        for har in [*report.glob("*.har"), *report.glob("har-*.json")]:
            entries += json.loads(har.read_text()).get("log", {}).get("entries", [])
        bad = []
        for entry in entries:
            response, url = entry["response"], entry["request"]["url"]
            text = (response.get("content") or {}).get("text") or ""
            if response["status"] >= 500 or (not _json_exempt(url) and entry["request"]["method"] != "HEAD"
                                             and not _is_json(text)):
                bad.append({"url": url[:200], "method": entry["request"]["method"], "status": response["status"],
                            "body": text[:200]})
        result["schemathesis_requests"] = len(entries)
        result["schemathesis_bad"] = bad[:20]
        result["schemathesis_bad_count"] = len(bad)
        log(f"fuzz: schemathesis exit {st.returncode}, {len(entries)} requests, {len(bad)} 5xx or not JSON "
            f"({result['schemathesis_seconds']} s)")
        # 2. the V2 tensor shapes and datatypes, and odd bodies, by hand
        cases = v2_cases(name)
        bad = []
        session = requests.Session()
        began = time.perf_counter()
        for method, path, body, headers in cases:
            try:
                answer = session.request(method, f"{server.base}{path}", data=body, headers=headers, timeout=60)
            except requests.RequestException as error:
                bad.append({"method": method, "path": path[:80], "body": body[:120].decode(errors="replace"),
                            "error": type(error).__name__})
                session = requests.Session()
                continue
            if answer.status_code >= 500 or (method != "HEAD" and not _json_exempt(path) and not _is_json(answer.text)):
                bad.append({"method": method, "path": path[:80], "body": body[:120].decode(errors="replace"),
                            "status": answer.status_code, "answer": answer.text[:200]})
        result["manual_requests"] = len(cases)
        result["manual_bad"] = bad[:20]
        result["manual_bad_count"] = len(bad)
        result["manual_seconds"] = round(time.perf_counter() - began, 1)
        log(f"fuzz: {len(cases)} V2 shape/datatype/data combinations and odd bodies, {len(bad)} 5xx or not JSON")
        result["server_alive"] = requests.get(f"{server.base}/v2/health/ready", timeout=10).status_code == 200
    finally:
        server.stop()
    return result


def _json_exempt(url: str) -> bool:
    path = url.split("://", 1)[-1].split("/", 1)[-1].split("?", 1)[0]
    return path in ("metrics", "openapi.yaml")


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def summarise_fuzz(result: dict) -> list[tuple[str, str, str]]:
    return [
        ("fuzz", "schemathesis (all checks but positive_data_acceptance): requests, 5xx or not JSON",
         f"{result['schemathesis_requests']}, {result['schemathesis_bad_count']} (exit {result['schemathesis_exit']})"),
        ("fuzz", "V2 shapes x datatypes x data, odd bodies, methods: requests, 5xx or not JSON",
         f"{result['manual_requests']}, {result['manual_bad_count']}"),
    ]
