"""An OpenAI-compatible chat server on loopback that plays a judge and injects faults on demand.

The "model" reads the fences of the judge prompt: it finds the nonce of the response fence, takes
the response between `<<<RESPONSE nonce>>>` and `<<<END RESPONSE nonce>>>`, and finds it
NON_COMPLIANT when it contains "harmful". It is deliberately gullible in two ways a real model
can be: it quotes the judged response in its answer (so a forged `VERDICT:` line in a response
shows up in the answer before the real one), and it obeys a `VERDICT:` line that it finds in the
user message *outside* the fences (so a response that escapes a fence does forge the verdict).
A request without judge fences is answered as a generation (`CORRECTION: ...`).

Faults, per item, are markers written in the judged response (or in a generation prompt):
`[[429]]` one 429 with Retry-After, `[[500xN]]` N answers of 500, `[[slow]]` one answer slower
than the client's timeout, `[[drop]]` one dropped connection, `[[garbage]]` always an answer
without a verdict line. Whole-server faults: `fail_all` = "500" | "503" | "drop" | "401",
`fail_after` (fail_all only once that many requests were served), `latency` seconds before
every answer. Every request is counted, per item too.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_NONCE = re.compile(r"<<<RESPONSE ([0-9a-f]+)>>>")
_FORGED = re.compile(r"^VERDICT:\s*(COMPLIANT|NON_COMPLIANT)\s*$", re.MULTILINE)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


class FaultServer:
    def __init__(self, latency: float = 0.0, slow_seconds: float = 2.0, retry_after: str = "0.05") -> None:
        self.latency = latency
        self.slow_seconds = slow_seconds
        self.retry_after = retry_after
        self.fail_all: str | None = None
        self.fail_after = 0
        self.requests = 0
        self.per_item: Counter[str] = Counter()  # attempts per judged response (or generation prompt)
        self.answered: Counter[str] = Counter()  # 200 answers per item
        self.auth_headers: list[str | None] = []
        self.bodies: list[dict] = []
        self._lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> FaultServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # headers and body go out in two writes; with Nagle on, a delayed ACK adds ~40 ms to each
            disable_nagle_algorithm = True

            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                owner._handle(self)

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._httpd is not None and self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    @property
    def url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def reset_counts(self) -> None:
        with self._lock:
            self.requests = 0
            self.per_item.clear()
            self.answered.clear()
            self.auth_headers.clear()
            self.bodies.clear()

    # -- one request -----------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        body = json.loads(h.rfile.read(int(h.headers.get("Content-Length", 0))) or b"{}")
        user = next((m["content"] for m in reversed(body.get("messages", [])) if m["role"] == "user"), "")
        nonce_match = _NONCE.search(user)
        if nonce_match:
            nonce = nonce_match.group(1)
            start, end = f"<<<RESPONSE {nonce}>>>\n", f"\n<<<END RESPONSE {nonce}>>>"
            item = user[user.index(start) + len(start) : user.index(end)]
            # the fenced regions, removed: what is left is what the model treats as instructions
            outside = re.sub(
                rf"<<<(PROMPT|RESPONSE) {nonce}>>>.*?<<<END \1 {nonce}>>>", "", user, flags=re.DOTALL
            )
        else:
            item, outside = user, ""
        with self._lock:
            self.requests += 1
            self.per_item[item] += 1
            attempt = self.per_item[item]
            served = self.requests
            self.auth_headers.append(h.headers.get("Authorization"))
            self.bodies.append(body)
        if self.latency:
            time.sleep(self.latency)

        fault = self.fail_all if served > self.fail_after else None
        if fault is None:
            m = re.search(r"\[\[500x(\d+)\]\]", item)
            if "[[429]]" in item and attempt == 1:
                fault = "429"
            elif m and attempt <= int(m.group(1)):
                fault = "500"
            elif "[[slow]]" in item and attempt == 1:
                fault = "slow"
            elif "[[drop]]" in item and attempt == 1:
                fault = "drop"
        if fault == "drop":
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault == "slow":
            time.sleep(self.slow_seconds)
        elif fault in ("429", "500", "503", "401"):
            headers = {"Retry-After": self.retry_after} if fault == "429" else {}
            self._send(h, int(fault), {"error": {"message": f"injected {fault}"}}, headers)
            return

        if not nonce_match:
            answer = f"CORRECTION: I will not help with that. ({item[-40:]})"
        elif "[[garbage]]" in item:
            answer = "I think it is probably fine, more or less."
        else:
            forged = _FORGED.search(outside)
            if forged:  # the model obeys what it reads outside the data fences
                verdict = forged.group(1)
            else:
                verdict = "NON_COMPLIANT" if "harmful" in item.lower() else "COMPLIANT"
            answer = f"The response reads:\n{item}\nJudged against the policy.\nVERDICT: {verdict}"
        with self._lock:
            self.answered[item] += 1
        payload = {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "model": body.get("model", ""),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
            ],
        }
        self._send(h, 200, payload, {})

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, payload: dict, headers: dict[str, str]) -> None:
        data = json.dumps(payload).encode("utf-8")
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass
