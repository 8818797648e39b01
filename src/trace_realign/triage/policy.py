"""A policy is the text the judge applies, identified by a hash of its content."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from trace_realign.errors import InputError


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
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise InputError("policy file not found", path=str(p)) from None
        except UnicodeDecodeError as exc:
            raise InputError(f"policy file is not UTF-8 text ({exc.reason})", path=str(p)) from None
        if not text.strip():
            raise InputError("policy file is empty", path=str(p), line=1)
        return cls(text=text, name=p.stem)
