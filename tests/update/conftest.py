"""Fixtures of the update tests."""

from __future__ import annotations

import pytest

from .rows import weighted_rows, write_rows


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
