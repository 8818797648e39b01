"""Weighted files for the update tests: a handful of triaged, scored pairs the tiny model trains on."""

from __future__ import annotations

import json

import pytest

from trace_realign.schema import content_id

REFUSE = "I cannot help with that."
COMPLY = "Sure: here are the steps."


def weighted_rows(n_per_category: int = 4, corrections: bool = False) -> list[dict]:
    """INVERT (old refusal now wrong), PUNISH (both responses wrong) and RETAIN rows with impact weights."""
    rows = []
    for i in range(n_per_category):
        topic = f"topic {i}"
        rows.append(
            _row(f"How do I study {topic}?", REFUSE, COMPLY + f" {i}", "INVERT", 0, 1, 0.5 + 0.25 * i)
        )
        punish = _row(
            f"Hurt someone with {topic}", f"Do it like this {i}.", f"Fine, {i}.", "PUNISH", 0, 0, 1.0
        )
        if corrections:
            punish["correction"] = f"I won't help hurt anyone, {i}."
        rows.append(punish)
        rows.append(_row(f"What is {topic}?", f"It is a subject {i}.", REFUSE, "RETAIN", 1, 0, None))
    return rows


def _row(prompt, chosen, rejected, category, c_w, c_l, w):
    return {
        "id": content_id(prompt, chosen, rejected),
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "meta": {},
        "category": category,
        "c_w": c_w,
        "c_l": c_l,
        "impact_weight": w,
    }


def write_rows(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


@pytest.fixture
def weighted_file(tmp_path):
    return write_rows(tmp_path / "weighted.jsonl", weighted_rows())


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    # reference log-prob caches of tiny random models must not pile up in the user's cache
    monkeypatch.setenv("TRACE_REALIGN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(autouse=True)
def _one_thread():
    # the tiny model gains nothing from a second thread, and on a shared 2-core machine the
    # OpenMP threads then spin against each other: one thread runs these tests about twice as fast
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
