"""SQLite caches for verdicts and generated text: every result is committed as it arrives.

Judge calls and generations cost money and time, so a run that is killed and started again must
not repeat one that finished. Both caches are a single SQLite file in WAL mode (readers never
block the writer, several processes can share it) with one row per result, written in its own
transaction the moment the result is known.

Keys are SHA-256 hashes of everything that decides the result, so prompts and responses of any
length index cheaply. Secrets never enter a key: a judge's `identity` names its kind, model and
decisive options only.

UNKNOWN verdicts are *not* stored. An unknown is a failure (an unparseable answer, a call that
kept failing), not an answer; storing it would make every rerun repeat the failure, whereas not
storing it lets a rerun retry exactly those items and nothing else.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from trace_realign.io import cache_root
from trace_realign.schema import Label, Verdict, canonical_hash

VERDICTS_FILE = "verdicts.sqlite"
GENERATIONS_FILE = "generations.sqlite"


def cache_key(*parts: Any) -> str:
    """Full SHA-256 of the JSON of `parts` (64 hex): collisions must not silently share a verdict."""
    return canonical_hash(*parts)


class _SqliteStore:
    """One SQLite file, one connection shared by the threads of this process behind a lock."""

    schema = ""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # isolation_level=None: every statement is its own committed transaction.
        self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a killed process (only a power cut can lose the last commits).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=60000")
        self._db.execute(self.schema)

    def _one(self, sql: str, args: tuple) -> tuple | None:
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    def _write(self, sql: str, args: tuple) -> None:
        with self._lock:
            self._db.execute(sql, args)

    def __len__(self) -> int:
        row = self._one(f"SELECT COUNT(*) FROM {self.table}", ())
        return int(row[0]) if row else 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VerdictCache(_SqliteStore):
    """Verdicts keyed by (judge identity, policy hash, prompt, response)."""

    table = "verdicts"
    schema = (
        "CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, judge TEXT NOT NULL, "
        "policy TEXT NOT NULL, label TEXT NOT NULL, reason TEXT NOT NULL, raw TEXT NOT NULL, "
        "created REAL NOT NULL)"
    )

    def __init__(self, path: str | Path | None = None) -> None:
        super().__init__(path if path is not None else cache_root() / VERDICTS_FILE)

    @staticmethod
    def key(judge_identity: str, policy_hash: str, prompt: str, response: str) -> str:
        return cache_key("verdict", judge_identity, policy_hash, prompt, response)

    def get(self, judge_identity: str, policy_hash: str, prompt: str, response: str) -> Verdict | None:
        row = self._one(
            "SELECT label, reason, raw FROM verdicts WHERE key = ?",
            (self.key(judge_identity, policy_hash, prompt, response),),
        )
        return Verdict(Label(row[0]), row[1], row[2]) if row else None

    def put(
        self, judge_identity: str, policy_hash: str, prompt: str, response: str, verdict: Verdict
    ) -> bool:
        """Commit one verdict; returns False (and stores nothing) for an UNKNOWN, see the module doc."""
        if verdict.label is Label.UNKNOWN:
            return False
        self._write(
            "INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                self.key(judge_identity, policy_hash, prompt, response),
                judge_identity,
                policy_hash,
                verdict.label.value,
                verdict.reason,
                verdict.raw,
                time.time(),
            ),
        )
        return True


class GenerationCache(_SqliteStore):
    """Generated text keyed by (generator identity, prompt, generation settings).

    `prompt` may be a string or a list of chat messages; `settings` is any JSON-serialisable dict
    of what changes the output (max tokens, temperature, seed, system prompt, ...).
    """

    table = "generations"
    schema = (
        "CREATE TABLE IF NOT EXISTS generations (key TEXT PRIMARY KEY, generator TEXT NOT NULL, "
        "text TEXT NOT NULL, meta TEXT NOT NULL, created REAL NOT NULL)"
    )

    def __init__(self, path: str | Path | None = None) -> None:
        super().__init__(path if path is not None else cache_root() / GENERATIONS_FILE)

    @staticmethod
    def key(generator_identity: str, prompt: Any, settings: dict[str, Any] | None = None) -> str:
        return cache_key("generation", generator_identity, prompt, settings or {})

    def get(self, generator_identity: str, prompt: Any, settings: dict[str, Any] | None = None) -> str | None:
        row = self._one(
            "SELECT text FROM generations WHERE key = ?", (self.key(generator_identity, prompt, settings),)
        )
        return row[0] if row else None

    def get_meta(
        self, generator_identity: str, prompt: Any, settings: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        row = self._one(
            "SELECT meta FROM generations WHERE key = ?", (self.key(generator_identity, prompt, settings),)
        )
        return json.loads(row[0]) if row else None

    def put(
        self,
        generator_identity: str,
        prompt: Any,
        settings: dict[str, Any] | None,
        text: str,
        meta: dict[str, Any] | None = None,
    ) -> None:
        self._write(
            "INSERT OR REPLACE INTO generations VALUES (?, ?, ?, ?, ?)",
            (
                self.key(generator_identity, prompt, settings),
                generator_identity,
                text,
                json.dumps(meta or {}, ensure_ascii=False, default=str),
                time.time(),
            ),
        )
