"""One reviewer's labels on disk: the audit's format, one line per pair, resumable, never half written."""

from __future__ import annotations

import json
import os

import pytest

from trace_realign.errors import InputError
from trace_realign.label.sample import prepare_sample
from trace_realign.label.store import LabelStore
from trace_realign.schema import Label
from trace_realign.triage.labelled import read_labelled

from .conftest import POLICY


@pytest.fixture
def sample(triaged_file, tmp_path):
    return prepare_sample(tmp_path, triaged=triaged_file, size=6, seed=0, policy=POLICY)


def lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_answers_land_in_the_file_audit_reads(sample, tmp_path):
    store = LabelStore(tmp_path, "alice", sample)
    a, b, c, d = sample.items[:4]
    store.answer(a.id, "complies", "violates", "  clear case ")
    store.answer(b.id, "violates", "skip")
    store.answer(c.id, "skip", "complies")
    store.answer(d.id, "skip", "skip", "the policy does not say")
    rows = lines(store.path)
    assert [r["id"] for r in rows] == [a.id, b.id, c.id]  # the both-skipped pair is not a verdict
    assert rows[0]["chosen_label"] == "compliant" and rows[0]["rejected_label"] == "non_compliant"
    assert (
        rows[0]["note"] == "clear case"
        and rows[0]["reviewer"] == "alice"
        and rows[0]["category"] == a.category
    )
    assert (
        rows[1]["response"] == b.chosen and rows[1]["side"] == "chosen" and rows[1]["skipped"] == "rejected"
    )
    assert rows[2]["response"] == c.rejected and rows[2]["label"] == "compliant"
    assert [r["id"] for r in lines(store.skipped_path)] == [d.id]
    labelled = read_labelled(store.path)  # audit reads it unchanged: 2 + 1 + 1 items
    assert [x.truth for x in labelled] == [
        Label.COMPLIANT,
        Label.NON_COMPLIANT,
        Label.NON_COMPLIANT,
        Label.COMPLIANT,
    ]
    assert [x.item.response for x in labelled] == [a.chosen, a.rejected, b.chosen, c.rejected]
    store.close()


def test_a_later_answer_replaces_the_earlier_one_and_a_restart_resumes(sample, tmp_path):
    store = LabelStore(tmp_path, "alice", sample)
    ids = [x.id for x in sample.items]
    assert store.next_open() == 0
    store.answer(ids[0], "complies", "complies")
    store.answer(ids[1], "violates", "violates")
    store.answer(ids[3], "complies", "violates")
    store.answer(ids[0], "violates", "complies", "changed my mind")
    assert [r["id"] for r in lines(store.path)] == [ids[0], ids[1], ids[3]]  # one line per pair
    assert lines(store.path)[0]["chosen_label"] == "non_compliant"
    assert len(read_labelled(store.path)) == 6  # the audit counts the pair once
    store.close()

    again = LabelStore(tmp_path, "alice", sample)
    assert again.answers == store.answers
    assert again.next_open() == 2 and again.next_open(2) == 4 and again.next_open(5) == 2
    assert again.progress()["done"] == 3 and again.progress()["total"] == 6
    assert sum(c["total"] for c in again.progress()["per_category"].values()) == 6
    # moving a pair into the skipped file and back keeps one line in one file
    again.answer(ids[1], "skip", "skip")
    assert ids[1] not in {r["id"] for r in lines(again.path)}
    assert [r["id"] for r in lines(again.skipped_path)] == [ids[1]]
    again.answer(ids[1], "complies", "skip")
    assert ids[1] in {r["id"] for r in lines(again.path)} and lines(again.skipped_path) == []
    for k in (2, 4, 5):
        again.answer(ids[k], "skip", "skip")
    assert again.next_open() is None and again.progress()["skipped"] == 3
    again.close()


def test_a_crash_mid_write_leaves_the_previous_answers_whole(sample, tmp_path, monkeypatch):
    store = LabelStore(tmp_path, "alice", sample)
    store.answer(sample.items[0].id, "complies", "violates")
    before = store.path.read_text()

    def power_cut(src, dst):
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", power_cut)
    with pytest.raises(OSError):
        store.answer(sample.items[1].id, "violates", "violates")
    monkeypatch.undo()
    assert store.path.read_text() == before  # the old file, whole: the new answer is the one lost
    assert sample.items[1].id not in store.answers  # and the store does not pretend otherwise
    store.close()
    assert LabelStore(tmp_path, "alice", sample).next_open() == 1


def test_every_answer_is_fsynced_before_it_is_acknowledged(sample, tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real(fd))
    store = LabelStore(tmp_path, "alice", sample)
    store.answer(sample.items[0].id, "complies", "violates")
    assert len(synced) >= 2  # the file and its folder (the rename)
    store.close()


def test_a_pair_left_in_both_files_by_a_crash_takes_the_later_answer(sample, tmp_path):
    pid = sample.items[0].id
    store = LabelStore(tmp_path, "alice", sample)
    store.answer(pid, "complies", "complies", at="2026-01-01T00:00:00.000000Z")
    store.close()
    # as if killed between the two writes of a later "skip both"
    skipped = {"id": pid, "skipped": "both", "labelled_at": "2026-01-02T00:00:00.000000Z", "note": ""}
    (tmp_path / "alice.skipped.jsonl").write_text(json.dumps(skipped) + "\n")
    again = LabelStore(tmp_path, "alice", sample)
    assert again.answers[pid].skipped
    again.answer(sample.items[1].id, "complies", "complies")  # the next write tidies up
    assert pid not in {r["id"] for r in lines(again.path)}
    again.close()


def test_two_reviewers_never_share_a_file_and_one_reviewer_one_server(sample, tmp_path):
    alice = LabelStore(tmp_path, "alice", sample)
    bob = LabelStore(tmp_path, "bob", sample)
    alice.answer(sample.items[0].id, "complies", "violates")
    bob.answer(sample.items[0].id, "violates", "violates")
    assert lines(alice.path)[0]["reviewer"] == "alice" and lines(bob.path)[0]["reviewer"] == "bob"
    assert lines(alice.path)[0]["chosen_label"] == "compliant"
    with pytest.raises(InputError, match="already labelling"):
        LabelStore(tmp_path, "alice", sample)
    alice.close()
    LabelStore(tmp_path, "alice", sample).close()  # free again once the first one is gone
    bob.close()


def test_reviewer_names_are_file_names_and_answers_are_checked(sample, tmp_path):
    for name in ("", "../evil", "a b", ".hidden"):
        with pytest.raises(InputError, match="reviewer name"):
            LabelStore(tmp_path, name, sample)
    store = LabelStore(tmp_path, "alice", sample)
    with pytest.raises(InputError, match="complies, violates, skip"):
        store.answer(sample.items[0].id, "yes", "skip")
    with pytest.raises(InputError, match="not in this sample"):
        store.answer("nope", "skip", "skip")
    store.close()


def test_lines_about_pairs_outside_the_sample_are_kept(sample, tmp_path):
    foreign = {"id": "elsewhere", "prompt": "p", "response": "r", "label": "compliant"}
    (tmp_path / "alice.jsonl").write_text(json.dumps(foreign) + "\n")
    store = LabelStore(tmp_path, "alice", sample)
    store.answer(sample.items[0].id, "complies", "complies")
    assert lines(store.path)[-1] == foreign
    store.close()
    (tmp_path / "carol.jsonl").write_text('{"prompt": "p", "response": "r", "label": "compliant"}\n')
    with pytest.raises(InputError, match="pair id") as err:
        LabelStore(tmp_path, "carol", sample)
    assert err.value.line == 1
