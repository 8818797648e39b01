"""The review page: one pair at a time, server-rendered by Starlette with Jinja2 templates.

Routes: `/` sends the reviewer to the first unanswered pair (or `/done`); `GET /item/N` shows pair N
(1-based): the policy (collapsible), the prompt as turns, responses A (the old winner y_w) and B
(the old loser y_l) side by side, complies / violates / skip for each and a note; `POST /item/N`
stores the answer through `LabelStore` before it answers, then redirects to the next unanswered
pair. A plain form POST does it all; `static/label.js` only adds the keyboard shortcuts.

Everything from the data (policy, prompt, responses, notes) goes through Jinja2's autoescaping,
so a response holding HTML or a script shows as text; the Content-Security-Policy allows scripts
only from the page's own `/static/`, so even a missed escape could not run one. The server checks
the Host header (no DNS rebinding) and refuses a POST from another origin.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trace_realign.errors import InputError
from trace_realign.label.sample import LabelItem, Sample
from trace_realign.label.store import ANSWERS, LabelStore, shown

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import RedirectResponse, Response

# Imported inside functions: Starlette, Jinja2 and uvicorn load when the page is served, not at import:
# `trace-realign label --help` and the Label Studio files need none of them (the TYPE_CHECKING block
# above is read by type checkers only).

HERE = Path(__file__).parent
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make the browser send `Origin: null` on our own POSTs
    "Cache-Control": "no-store",
}
WORDS = {"complies": "Complies", "violates": "Violates", "skip": "Skip"}
KEYS = {"chosen": ("1", "2", "3"), "rejected": ("q", "w", "e")}


@dataclass
class LabelSession:
    """What one server shows: the sample, the reviewer's store and the commands to run afterwards."""

    sample: Sample
    store: LabelStore
    audit_lines: list[str]
    agreement_line: str | None = None


def create_app(session: LabelSession, allowed_hosts: Sequence[str] = LOOPBACK) -> Any:
    """The Starlette app for `session`; `allowed_hosts` are the Host names it answers to."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    pages = _Pages(session, _templates())
    routes = [
        Route("/", pages.home),
        Route("/done", pages.done),
        Route("/item/{n:int}", pages.show, methods=["GET"]),
        Route("/item/{n:int}", pages.save, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))]
    return Starlette(routes=routes, middleware=middleware)


def _templates() -> Any:
    """The page templates, every value from the data autoescaped and a missing one an error."""
    import jinja2
    from starlette.templating import Jinja2Templates

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    return Jinja2Templates(env=env)


class _Pages:
    """The routes of one review session, one method each (`home`, `done`, `show`, `save`): every
    answer lives in the session's store, so the pages themselves keep no state."""

    def __init__(self, session: LabelSession, templates: Any) -> None:
        self.session = session
        self.templates = templates
        self.store = session.store
        self.items = session.sample.items
        self.total = len(self.items)

    def page(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        """Template `name` with `context` and what every page shows (reviewer, progress, commands)."""
        store = self.store
        context.update(
            reviewer=store.reviewer,
            progress=store.progress(),
            labels_path=shown(store.path),
            audit_lines=self.session.audit_lines,
            agreement_line=self.session.agreement_line,
        )
        return self.templates.TemplateResponse(request, name, context, status_code=status, headers=HEADERS)

    def item_page(
        self,
        request: Request,
        i: int,
        given: dict[str, str] | None = None,
        error: str = "",
        status: int = 200,
    ) -> Response:
        """Pair `i` (0-based) with the answers `given` (by default the stored ones) and an `error`."""
        item = self.items[i]
        answer = self.store.answers.get(item.id)
        given = given or ({"chosen": answer.chosen, "rejected": answer.rejected} if answer else {})
        return self.page(
            request,
            "item.html",
            status,
            n=i + 1,
            total=self.total,
            item=item,
            turns=item.turns,
            sides=_sides(item, given),
            answer=answer,
            error=error,
            prev_n=(i - 1) % self.total + 1,
            next_n=(i + 1) % self.total + 1,
            policy_name=self.session.sample.policy_name,
            policy_text=self.session.sample.policy_text,
        )

    def where(self, i: int | None) -> RedirectResponse:
        """To pair `i` (0-based), or to `/done` when `i` is None (every pair answered)."""
        from starlette.responses import RedirectResponse

        return RedirectResponse("/done" if i is None else f"/item/{i + 1}", status_code=303)

    async def home(self, request: Request) -> Response:
        return self.where(self.store.next_open())

    async def done(self, request: Request) -> Response:
        return self.page(request, "done.html")

    async def show(self, request: Request) -> Response:
        n = request.path_params["n"]
        if not 1 <= n <= self.total:
            return self.page(request, "missing.html", 404)
        return self.item_page(request, n - 1)

    async def save(self, request: Request) -> Response:
        """Store the answer to pair N and go to the next open one; refuse a cross-origin POST, a
        form for another pair (a stale page) and a side left unanswered."""
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import PlainTextResponse

        n = request.path_params["n"]
        if not 1 <= n <= self.total:
            return self.page(request, "missing.html", 404)
        origin = request.headers.get("origin")
        if origin and origin.split("://", 1)[-1] != request.headers.get("host"):
            return PlainTextResponse("cross-origin POST refused", status_code=403)
        form = await request.form()
        item = self.items[n - 1]
        if form.get("id") != item.id:
            return PlainTextResponse("this page is out of date: reload it", status_code=409)
        given = {k: str(form.get(k) or "") for k in ("chosen", "rejected")}
        missing = [letter for k, letter in (("chosen", "A"), ("rejected", "B")) if given[k] not in ANSWERS]
        if missing:
            error = f"Choose complies, violates or skip for response {' and '.join(missing)}."
            return self.item_page(request, n - 1, given, error, 400)
        note = str(form.get("note") or "")
        await run_in_threadpool(self.store.answer, item.id, given["chosen"], given["rejected"], note)
        return self.where(self.store.next_open(n - 1))


def _sides(item: LabelItem, given: dict[str, str]) -> list[dict[str, Any]]:
    """Responses A (the old winner) and B (the old loser) as the item page lays them out: the text,
    the answer given, and each answer's label and keyboard shortcut."""
    return [
        {
            "key": key,
            "letter": letter,
            "text": getattr(item, key),
            "given": given.get(key),
            "options": [(a, WORDS[a], k) for a, k in zip(ANSWERS, KEYS[key], strict=True)],
        }
        for key, letter in (("chosen", "A"), ("rejected", "B"))
    ]


def serve(session: LabelSession, host: str = "127.0.0.1", port: int = 8765, on_ready: Any = None) -> None:
    """Serve `session` until Ctrl-C (or SIGTERM). The port is bound here first, so one in use is an
    `InputError` (exit 2); port 0 takes a free one. `on_ready(url)` is called once it listens."""

    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # as uvicorn does: a restart right after a kill may rebind while old connections linger in
    # TIME_WAIT; a port another server listens on is still refused
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise InputError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}): pass another --port", field="port"
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    loopback = host in LOOPBACK
    hosts = list(LOOPBACK) if loopback else ["*"]  # a public bind answers to whatever name reaches it
    app = create_app(session, hosts)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    if on_ready is not None:
        on_ready(f"http://{shown}:{bound}/")
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down cleanly, then re-raises the Ctrl-C it caught
        pass
    finally:
        sock.close()
