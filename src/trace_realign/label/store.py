"""One reviewer's labels, on disk after every answer, in the file `trace-realign audit` reads.

`OUT/<reviewer>.jsonl` holds one line per answered pair and nothing else, so `audit --labelled`
reads it unchanged (triage/labelled.py):

- both responses judged: a pair row `{prompt, chosen, rejected, chosen_label, rejected_label}`;
- one response skipped: an item row `{prompt, response, label}` for the other one, with `side`
  (`chosen` / `rejected`) and `skipped` naming the side left out: a skip is never a verdict;
- both skipped: no line here; the pair goes to `OUT/<reviewer>.skipped.jsonl` instead, so it is
  not asked again and the audit never sees it.

Labels are `compliant` / `non_compliant`; every line also carries the pair `id`, the judge's
`category`, `reviewer`, `note` and `labelled_at` (UTC), which the audit ignores.

Every answer rewrites the reviewer's files atomically and durably (temporary file, fsync, rename,
fsync of the folder): a kill or a power cut leaves the previous answers or the new ones, never half
a line. A later answer to the same pair replaces the earlier one in place, so no pair is counted
twice. When an answer moves a pair between the two files, it is written to the file that gains it
before it leaves the other, and on reading the later `labelled_at` wins. Each reviewer has their own files and a lock
(`OUT/.<reviewer>.lock`, released by the kernel if the server dies), so two reviewers, or two
servers for one, never overwrite each other.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trace_realign.errors import InputError
from trace_realign.io import read_jsonl, write_text_atomic
from trace_realign.judges.labels import to_label
from trace_realign.label.sample import LabelItem, Sample
from trace_realign.schema import Label

# Imported inside functions: fcntl, for the reviewer's lock, exists on POSIX only.

ANSWERS = ("complies", "violates", "skip")
LABEL_OF = {"complies": Label.COMPLIANT.value, "violates": Label.NON_COMPLIANT.value}
SIDES = ("chosen", "rejected")
REVIEWER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def now() -> str:
    """UTC time with microseconds; such strings sort in time order."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_reviewer(name: str) -> str:
    """A reviewer name is also a file name: letters, digits, `.`, `_`, `-`."""
    if not REVIEWER.match(name or ""):
        raise InputError(
            f"reviewer name {name!r}: use 1-64 letters, digits, '.', '_' or '-' (it names the labels file)",
            field="reviewer",
        )
    return name


@dataclass(frozen=True)
class Answer:
    """A reviewer's answer for one pair: `complies`, `violates` or `skip` for each response."""

    chosen: str
    rejected: str
    note: str = ""
    at: str = ""

    def __post_init__(self) -> None:
        for side in SIDES:
            if getattr(self, side) not in ANSWERS:
                raise InputError(
                    f"expected one of {', '.join(ANSWERS)}, got {getattr(self, side)!r}", field=side
                )

    @property
    def skipped(self) -> bool:
        return self.chosen == "skip" and self.rejected == "skip"


def label_row(item: LabelItem, answer: Answer, reviewer: str) -> dict[str, Any]:
    """The line of the labels file for `answer` (see the module doc); both-skipped gives the
    line of the skipped file."""
    extra: dict[str, Any] = {
        "id": item.id,
        "category": item.category,
        "reviewer": reviewer,
        "note": answer.note,
        "labelled_at": answer.at,
    }
    if answer.skipped:
        return {**extra, "skipped": "both"}
    given = [s for s in SIDES if getattr(answer, s) != "skip"]
    if len(given) == 2:
        return {
            "prompt": item.prompt,
            "chosen": item.chosen,
            "rejected": item.rejected,
            "chosen_label": LABEL_OF[answer.chosen],
            "rejected_label": LABEL_OF[answer.rejected],
            **extra,
        }
    side = given[0]
    other = "rejected" if side == "chosen" else "chosen"
    return {
        "prompt": item.prompt,
        "response": getattr(item, side),
        "label": LABEL_OF[getattr(answer, side)],
        "side": side,
        "skipped": other,
        **extra,
    }


def _answer_of(row: dict[str, Any], path: Path, line: int) -> Answer:

    def word(value: Any, field: str) -> str:
        label = to_label(value)
        if label is None:
            raise InputError(
                f"expected compliant or non_compliant, got {value!r}", path=str(path), line=line, field=field
            )
        return "complies" if label is Label.COMPLIANT else "violates"

    note, at = str(row.get("note") or ""), str(row.get("labelled_at") or "")
    if row.get("skipped") == "both":
        return Answer("skip", "skip", note, at)
    if "response" in row:
        side = row.get("side")
        if side not in SIDES:
            raise InputError("expected chosen or rejected", path=str(path), line=line, field="side")
        given = word(row.get("label"), "label")
        return Answer(given, "skip", note, at) if side == "chosen" else Answer("skip", given, note, at)
    return Answer(
        word(row.get("chosen_label"), "chosen_label"),
        word(row.get("rejected_label"), "rejected_label"),
        note,
        at,
    )


class LabelStore:
    """The answers of `reviewer` over `sample`, kept in `out_dir` (see the module doc).

    Opening takes the reviewer's lock; `close()` (or the end of the process) releases it."""

    def __init__(self, out_dir: str | Path, reviewer: str, sample: Sample, *, lock: bool = True) -> None:
        self.dir = Path(out_dir)
        self.reviewer = check_reviewer(reviewer)
        self.sample = sample
        self.path = self.dir / f"{reviewer}.jsonl"
        self.skipped_path = self.dir / f"{reviewer}.skipped.jsonl"
        self.index = {x.id: i for i, x in enumerate(sample.items)}
        self._mutex = threading.Lock()
        self._lock_fd: int | None = None
        self.dir.mkdir(parents=True, exist_ok=True)
        if lock:
            self._take_lock()
        self.answers: dict[str, Answer] = {}
        self._foreign: list[dict[str, Any]] = []  # lines about pairs not in the sample: kept as they are
        self._written: dict[Path, str] = {}
        try:
            for path in (self.path, self.skipped_path):
                self._read(path)
        except BaseException:
            self.close()
            raise
        self._on_disk, _ = self._lines()  # what the labels file holds about the sample's pairs

    # -------------------------------------------------------------------------- files

    def _take_lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, one server per reviewer is then up to the user
            return
        lock_path = self.dir / f".{self.reviewer}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise InputError(
                f"reviewer {self.reviewer!r} is already labelling here (pid {holder}): stop that server "
                "or pick another --reviewer",
                path=str(self.path),
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def _read(self, path: Path) -> None:

        if not path.is_file():
            return
        self._written[path] = path.read_text(encoding="utf-8")
        for line, row in read_jsonl(path):
            pid = row.get("id")
            if not isinstance(pid, str) or not pid:
                raise InputError(
                    "every line needs the pair id (is this file written by `trace-realign label`?)",
                    path=str(path),
                    line=line,
                    field="id",
                )
            if pid not in self.index:
                if path == self.path:
                    self._foreign.append(row)
                continue
            answer = _answer_of(row, path, line)
            old = self.answers.get(pid)
            if old is None or answer.at >= old.at:
                self.answers[pid] = answer

    def _lines(self) -> tuple[dict[str, str], dict[str, str]]:
        """The lines each file should hold now, by pair id: (labels file, skipped file)."""

        labelled, skipped = {}, {}
        for item in self.sample.items:
            answer = self.answers.get(item.id)
            if answer is not None:
                line = json.dumps(label_row(item, answer, self.reviewer), ensure_ascii=False) + "\n"
                (skipped if answer.skipped else labelled)[item.id] = line
        return labelled, skipped

    def _text(self, lines: dict[str, str], foreign: bool) -> str:
        ordered = [lines[x.id] for x in self.sample.items if x.id in lines]
        if foreign:
            ordered += [json.dumps(r, ensure_ascii=False) + "\n" for r in self._foreign]
        return "".join(ordered)

    def _write(self) -> None:
        """Bring both files to the current answers so that a crash between any two steps leaves
        every pair in at least one of them: the labels file first gains its new lines (keeping
        those about to leave it), then the skipped file is written, then the labels file drops
        the lines that moved."""

        labelled, skipped = self._lines()
        steps = [
            (self.path, self._text({**self._on_disk, **labelled}, True)),
            (self.skipped_path, self._text(skipped, False)),
            (self.path, self._text(labelled, True)),
        ]
        for path, text in steps:
            if self._written.get(path, "") != text:
                write_text_atomic(path, text, durable=True)
                self._written[path] = text
        self._on_disk = labelled

    # -------------------------------------------------------------------------- answers

    def answer(
        self, item_id: str, chosen: str, rejected: str, note: str = "", at: str | None = None
    ) -> Answer:
        """Record the answer to pair `item_id`, on disk before this returns; it replaces an earlier one."""
        answer = Answer(chosen, rejected, note.strip(), at or now())
        self.record({item_id: answer})
        return answer

    def record(self, answers: Mapping[str, Answer]) -> None:
        """Record several answers with one write (an import); each replaces an earlier answer to its pair."""
        for pid in answers:
            if pid not in self.index:
                raise InputError(f"pair {pid} is not in this sample", field="id")
        with self._mutex:
            before = self.answers
            # a new dict, never one changed in place: the page reads `answers` from other threads
            self.answers = {**before, **answers}
            try:
                self._write()
            except BaseException:
                self.answers = before  # not on disk, so not given: the page shows the error
                raise

    # -------------------------------------------------------------------------- where we are

    def next_open(self, after: int = -1) -> int | None:
        """Index of the first unanswered item after position `after`, wrapping round; None when all are done."""
        n = len(self.sample.items)
        for k in range(1, n + 1):
            i = (after + k) % n
            if self.sample.items[i].id not in self.answers:
                return i
        return None

    def progress(self) -> dict[str, Any]:
        """Answered / total overall and per category, and how many pairs were skipped whole."""
        per: dict[str, dict[str, int]] = {}
        for item in self.sample.items:
            cell = per.setdefault(item.category or "all", {"done": 0, "total": 0})
            cell["total"] += 1
            cell["done"] += item.id in self.answers
        done = sum(c["done"] for c in per.values())
        return {
            "done": done,
            "total": len(self.sample.items),
            "skipped": sum(a.skipped for pid, a in self.answers.items() if pid in self.index),
            "per_category": dict(sorted(per.items())) if len(per) > 1 or "all" not in per else {},
        }


def shown(path: str | Path) -> str:
    """`path` relative to the working folder when it lies inside it, else absolute."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)
