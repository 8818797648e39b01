"""A loopback server with the Batch API endpoints the batch judge uses, and faults on demand.

`POST /v1/files` (multipart upload), `POST /v1/batches`, `GET /v1/batches/{id}`,
`GET /v1/files/{id}/content`, and `POST /v1/chat/completions` for one-at-a-time judging. A job is `validating`, then `in_progress`, and ends on the
`polls`-th retrieve. Each request is answered as `FaultServer` answers a judge request:
NON_COMPLIANT when the fenced response contains "harmful", else COMPLIANT.

Faults: a response containing `[[fail]]` comes back in the error file with status 500;
`expire_after=N` ends the job `expired` with only the first N requests answered;
`fail_job=True` ends it `failed` (input refused); `fail_status=503` answers every call 503.
Uploaded request files are kept (`uploads`) so tests can read what was sent.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_NONCE = re.compile(r"<<<RESPONSE ([0-9a-f]+)>>>")


def fenced_response(user: str) -> str:
    nonce = _NONCE.search(user).group(1)
    start, end = f"<<<RESPONSE {nonce}>>>\n", f"\n<<<END RESPONSE {nonce}>>>"
    return user[user.index(start) + len(start) : user.index(end)]


class BatchServer:
    def __init__(self, polls: int = 2) -> None:
        self.polls = polls
        self.expire_after: int | None = None
        self.fail_job = False
        self.fail_status: int | None = None
        self.files: dict[str, bytes] = {}
        self.uploads: list[list[dict]] = []
        self.batches: dict[str, dict] = {}
        self.retrieves: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.auth_headers: list[str | None] = []
        self._lock = threading.Lock()
        self._n = 0

    def __enter__(self) -> BatchServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                owner._handle(self, "POST")

            def do_GET(self) -> None:
                owner._handle(self, "GET")

        class _Server(ThreadingHTTPServer):
            daemon_threads = True

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def _id(self, prefix: str) -> str:
        with self._lock:
            self._n += 1
            return f"{prefix}-{self._n}"

    # -- one request -------------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        body = h.rfile.read(int(h.headers.get("Content-Length", 0) or 0))
        path = h.path.split("?")[0].removeprefix("/v1")
        with self._lock:
            self.calls[f"{method} {re.sub(r'/[a-z]+-[0-9]+', '/ID', path)}"] += 1
            self.auth_headers.append(h.headers.get("Authorization"))
        if self.fail_status:
            return self._send(h, self.fail_status, {"error": {"message": "injected"}})
        if method == "POST" and path == "/chat/completions":  # one request at a time, same answers
            req = json.loads(body)
            return self._send(h, 200, self._answer(req["model"], req["messages"][-1]["content"]))
        if method == "POST" and path == "/files":
            return self._upload(h, body)
        if method == "POST" and path == "/batches":
            return self._create(h, json.loads(body))
        m = re.fullmatch(r"/batches/([\w-]+)", path)
        if method == "GET" and m:
            return self._retrieve(h, m.group(1))
        m = re.fullmatch(r"/files/([\w-]+)/content", path)
        if method == "GET" and m and m.group(1) in self.files:
            return self._send_bytes(h, self.files[m.group(1)])
        return self._send(h, 404, {"error": {"message": f"no route {method} {path}"}})

    def _upload(self, h: BaseHTTPRequestHandler, body: bytes) -> None:
        boundary = h.headers["Content-Type"].split("boundary=", 1)[1].strip('"').encode()
        purpose, content = None, None
        for part in body.split(b"--" + boundary):
            if b"\r\n\r\n" not in part:
                continue
            head, data = part.split(b"\r\n\r\n", 1)
            data = data.removesuffix(b"\r\n")
            if b'name="purpose"' in head:
                purpose = data.decode()
            elif b'name="file"' in head:
                content = data
        if purpose != "batch" or content is None:
            return self._send(h, 400, {"error": {"message": "expected purpose=batch and a file"}})
        fid = self._id("file")
        self.files[fid] = content
        self.uploads.append([json.loads(line) for line in content.decode().splitlines() if line.strip()])
        self._send(
            h,
            200,
            {
                "id": fid,
                "object": "file",
                "bytes": len(content),
                "created_at": int(time.time()),
                "filename": "requests.jsonl",
                "purpose": "batch",
            },
        )

    def _create(self, h: BaseHTTPRequestHandler, req: dict) -> None:
        if req.get("input_file_id") not in self.files or req.get("endpoint") != "/v1/chat/completions":
            return self._send(h, 400, {"error": {"message": "bad batch request"}})
        bid = self._id("batch")
        self.batches[bid] = {
            "id": bid,
            "object": "batch",
            "endpoint": req["endpoint"],
            "input_file_id": req["input_file_id"],
            "completion_window": req.get("completion_window", "24h"),
            "created_at": int(time.time()),
            "status": "validating",
        }
        self._send(h, 200, self._with_counts(self.batches[bid]))

    def _with_counts(self, batch: dict) -> dict:
        n = len(self.files[batch["input_file_id"]].splitlines())
        done = batch.get("_done", 0)
        out = {k: v for k, v in batch.items() if not k.startswith("_")}
        out["request_counts"] = {"total": n, "completed": done, "failed": batch.get("_failed", 0)}
        return out

    def _retrieve(self, h: BaseHTTPRequestHandler, bid: str) -> None:
        batch = self.batches.get(bid)
        if batch is None:
            return self._send(h, 404, {"error": {"message": "no such batch"}})
        with self._lock:
            self.retrieves[bid] += 1
            polls = self.retrieves[bid]
        if batch["status"] not in ("completed", "expired", "failed") and polls >= self.polls:
            self._finish(batch)
        elif batch["status"] == "validating":
            batch["status"] = "in_progress"
        self._send(h, 200, self._with_counts(batch))

    def _finish(self, batch: dict) -> None:
        if self.fail_job:
            batch["status"] = "failed"
            batch["errors"] = {
                "object": "list",
                "data": [{"code": "invalid_request", "message": "injected failure"}],
            }
            return
        requests = [
            json.loads(line)
            for line in self.files[batch["input_file_id"]].decode().splitlines()
            if line.strip()
        ]
        if self.expire_after is not None:
            requests = requests[: self.expire_after]
        out, err = [], []
        for r in requests:
            user = r["body"]["messages"][-1]["content"]
            item = fenced_response(user)
            if "[[fail]]" in item:
                err.append(
                    {
                        "id": self._id("req"),
                        "custom_id": r["custom_id"],
                        "response": {
                            "status_code": 500,
                            "body": {"error": {"message": "injected server error"}},
                        },
                        "error": None,
                    }
                )
                continue
            body = self._answer(r["body"]["model"], user)
            row = {"id": self._id("req"), "custom_id": r["custom_id"], "error": None}
            out.append({**row, "response": {"status_code": 200, "body": body}})
        for key, rows in (("output_file_id", out), ("error_file_id", err)):
            if rows:
                fid = self._id("file")
                self.files[fid] = "".join(json.dumps(x) + "\n" for x in rows).encode()
                batch[key] = fid
        batch["_done"], batch["_failed"] = len(out), len(err)
        batch["status"] = "expired" if self.expire_after is not None else "completed"

    @staticmethod
    def _answer(model: str, user: str) -> dict:
        """The chat completion for one judge request: NON_COMPLIANT when the response says "harmful"."""
        item = fenced_response(user)
        verdict = "NON_COMPLIANT" if "harmful" in item.lower() else "COMPLIANT"
        message = {"role": "assistant", "content": f"Read the response.\nVERDICT: {verdict}"}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return {"id": "chatcmpl-b", "object": "chat.completion", "model": model, "choices": [choice]}

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, payload: dict) -> None:
        BatchServer._send_bytes(h, json.dumps(payload).encode(), status, "application/json")

    @staticmethod
    def _send_bytes(
        h: BaseHTTPRequestHandler, data: bytes, status: int = 200, ctype: str = "application/octet-stream"
    ) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)
