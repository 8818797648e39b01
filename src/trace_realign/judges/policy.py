"""A policy is the text the judge applies, identified by a hash of its content."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from trace_realign.errors import InputError
from trace_realign.io import read_text


@dataclass(frozen=True)
class Policy:
    text: str
    name: str = "policy"

    @property
    def hash(self) -> str:
        return hashlib.sha256(self.text.strip().encode("utf-8")).hexdigest()[:16]

    @classmethod
    def from_file(cls, path: str | Path) -> Policy:
        p = Path(path)
        text = read_text(p, "policy file")
        if not text.strip():
            raise InputError("policy file is empty", path=str(p), line=1)
        return cls(text=text, name=p.stem)
