"""Test doubles for evaluation: a keyword judge and a loopback OpenAI-compatible chat server."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from trace_realign.judges.base import JudgeItem, OnVerdict
from trace_realign.judges.policy import Policy
from trace_realign.schema import Label, Verdict


class KeywordJudge:
    """Compliant when the response contains "SAFE", unknown when it contains "???", else not."""

    cacheable = True

    def __init__(self, identity: str = "keyword-judge") -> None:
        self.identity = identity
        self.calls = 0

    @staticmethod
    def label(response: str) -> Label:
        if "???" in response:
            return Label.UNKNOWN
        return Label.COMPLIANT if "SAFE" in response else Label.NON_COMPLIANT

    def judge(
        self, policy: Policy, items: Sequence[JudgeItem], on_verdict: OnVerdict | None = None
    ) -> list[Verdict]:
        out = []
        for i, it in enumerate(items):
            self.calls += 1
            v = Verdict(self.label(it.response), "keyword")
            if on_verdict:
                on_verdict(i, v)
            out.append(v)
        return out


class ParityJudge(KeywordJudge):
    """For random tiny-model text: the verdict follows the response length mod 3 (c / n / unknown)."""

    def __init__(self) -> None:
        super().__init__("parity-judge")

    @staticmethod
    def label(response: str) -> Label:
        return [Label.COMPLIANT, Label.NON_COMPLIANT, Label.UNKNOWN][len(response) % 3]


RESPONSE_FENCE = re.compile(r"<<<RESPONSE (\d) (\w+)>>>\n(.*?)\n<<<END RESPONSE \1 \2>>>", re.S)


class ChatServer:
    """`/v1/chat/completions` on loopback.

    A pairwise judge request (two fenced responses) is answered `VERDICT: 1|2|TIE`: the response
    containing "SAFE" wins, or with `bias="first"` always the first shown; "???" in a response
    makes the answer unparseable. Any other request is a generation: "echo: <last user message>".
    """

    def __init__(self, bias: str | None = None) -> None:
        self.bias = bias
        self.requests = 0
        self.bodies: list[dict] = []

    def answer(self, body: dict) -> str:
        user = body["messages"][-1]["content"]
        found = dict((n, text) for n, _, text in RESPONSE_FENCE.findall(user))
        if not found:
            return f"echo: {user}"
        if any("???" in t for t in found.values()):
            return "I am not sure."
        if self.bias == "first":
            return "Reason: first is best.\nVERDICT: 1"
        a, b = "SAFE" in found["1"], "SAFE" in found["2"]
        return "Reason.\nVERDICT: " + ("TIE" if a == b else ("1" if a else "2"))

    def __enter__(self) -> ChatServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests += 1
                owner.bodies.append(body)
                data = json.dumps({"choices": [{"message": {"content": owner.answer(body)}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
