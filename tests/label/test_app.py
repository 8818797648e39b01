"""The review page through Starlette's TestClient: escaping, the form POST without JavaScript, guards."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from trace_realign.label.app import LabelSession, create_app
from trace_realign.label.sample import prepare_sample
from trace_realign.label.stage import audit_commands
from trace_realign.label.store import LabelStore
from trace_realign.triage.labelled import read_labelled

from .conftest import JUDGE, POLICY, SCRIPT

BASE = "http://127.0.0.1:8765"


@pytest.fixture
def page(triaged_file, tmp_path):
    """A client on a sample of every pair (the one holding HTML included), and its store."""
    sample = prepare_sample(tmp_path, triaged=triaged_file, size=13, seed=0, policy=POLICY)
    store = LabelStore(tmp_path, "alice", sample)
    session = LabelSession(sample, store, audit_commands(store.path, POLICY, [JUDGE]))
    with TestClient(create_app(session), base_url=BASE, follow_redirects=False) as client:
        yield client, sample, store
    store.close()


def answer(client, n, item, chosen, rejected, note=""):
    return client.post(
        f"/item/{n}", data={"id": item.id, "chosen": chosen, "rejected": rejected, "note": note}
    )


def test_markup_in_prompt_response_and_note_shows_as_text(page):
    client, sample, _ = page
    n = next(i for i, x in enumerate(sample.items, start=1) if SCRIPT in x.rejected)
    item = sample.items[n - 1]
    note = "</textarea><script>alert(2)</script>"
    answer(client, n, item, "complies", "violates", note)
    html = client.get(f"/item/{n}").text
    assert SCRIPT not in html and "<b>footer</b>" not in html and "alert(2)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; runs when the page loads" in html  # the response, as text
    assert (
        "I found &lt;script&gt;alert(1)&lt;/script&gt; in the &lt;b&gt;footer&lt;/b&gt;" in html
    )  # a user turn
    assert "&lt;/textarea&gt;&lt;script&gt;alert(2)&lt;/script&gt;</textarea>" in html  # the note, prefilled
    assert html.count('class="turn role-') == 4  # the conversation as turns
    assert html.count("<script") == 1  # only the page's own /static/label.js
    csp = client.get(f"/item/{n}").headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp


def test_the_form_post_stores_each_answer_and_moves_on(page):
    client, sample, store = page
    first = client.get("/")
    assert first.status_code == 303 and first.headers["location"] == "/item/1"
    r = answer(client, 1, sample.items[0], "complies", "violates", "clear")
    assert r.status_code == 303 and r.headers["location"] == "/item/2"
    rows = [json.loads(x) for x in store.path.read_text().splitlines()]
    assert rows[0]["id"] == sample.items[0].id and rows[0]["note"] == "clear"
    answer(client, 3, sample.items[2], "skip", "violates")
    assert client.get("/").headers["location"] == "/item/2"  # the first unanswered one
    r = answer(client, 2, sample.items[1], "violates", "violates")
    assert r.headers["location"] == "/item/4"  # the next unanswered after it
    again = client.get("/item/1").text  # an answered pair comes back prefilled
    assert 'value="complies" required checked' in again and "Answered 20" in again
    assert "3 / 13</strong> answered" in again
    assert len(read_labelled(store.path)) == 2 + 2 + 1
    for n, item in enumerate(sample.items, start=1):
        answer(client, n, item, "skip", "skip")
    assert client.get("/").headers["location"] == "/done"
    done = client.get("/done").text
    assert (
        "All 13 pairs answered" in done
        and "trace-realign audit --labelled" in done
        and "--judge rules:" in done
    )


def test_an_incomplete_or_stale_or_foreign_post_stores_nothing(page):
    client, sample, store = page
    item = sample.items[0]
    r = client.post("/item/1", data={"id": item.id, "chosen": "complies"})
    assert r.status_code == 400 and "response B" in r.text
    assert 'value="complies" required checked' in r.text  # what was chosen stays chosen
    assert (
        client.post("/item/1", data={"id": "other", "chosen": "skip", "rejected": "skip"}).status_code == 409
    )
    headers = {"Origin": "http://evil.example"}
    r = client.post("/item/1", data={"id": item.id, "chosen": "skip", "rejected": "skip"}, headers=headers)
    assert r.status_code == 403
    assert client.get("/item/1", headers={"Host": "evil.example"}).status_code == 400  # DNS rebinding
    assert client.get("/item/99").status_code == 404 and client.post("/item/0", data={}).status_code == 404
    assert store.answers == {} and not store.path.exists()


def test_the_page_links_previous_next_and_shows_progress_per_category(page):
    client, sample, _ = page
    html = client.get("/item/1").text
    assert 'id="prev" href="/item/13"' in html and 'id="next" href="/item/2"' in html
    for cat, total in sorted(sample.strata.items()):
        assert f"{cat} 0/{total}" in html
    assert client.get("/static/label.js").status_code == 200
