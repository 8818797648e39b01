"""Small file helpers every stage shares: JSONL in and out, atomic writes, the cache folder."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from trace_realign.errors import InputError


def cache_root() -> Path:
    """Where caches live unless a path is given: `$TRACE_REALIGN_CACHE` or `~/.cache/trace-realign`."""
    return Path(os.environ.get("TRACE_REALIGN_CACHE", Path.home() / ".cache" / "trace-realign"))


def read_jsonl(
    path: str | Path, on_bad_line: Callable[[InputError], None] | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield `(line_number, row)` for each non-blank line. A bad line is an `InputError` naming it;
    with `on_bad_line`, that error is handed to it instead and the line skipped."""
    p = Path(path)
    if not p.exists():
        raise InputError("file not found", path=str(p))
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line.rstrip("\r\n"))  # so the column counts within the line
            except json.JSONDecodeError as exc:
                error = InputError(f"unparseable JSON ({exc.msg} at column {exc.colno})", path=str(p), line=n)
            else:
                if isinstance(row, dict):
                    yield n, row
                    continue
                error = InputError(f"expected a JSON object, got {type(row).__name__}", path=str(p), line=n)
            if on_bad_line is None:
                raise error
            on_bad_line(error)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write JSON through a temporary file and a rename, so a crash never leaves half a file."""
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def write_json_if_changed(path: str | Path, obj: Any) -> None:
    """`write_json_atomic`, unless the file already holds exactly this: a rerun that computed the
    same thing leaves the file and its time stamp alone, so nothing keyed on it reruns."""
    p = Path(path)
    if p.exists():
        try:
            if json.loads(p.read_text(encoding="utf-8")) == json.loads(json.dumps(obj, default=str)):
                return
        except ValueError:
            pass
    write_json_atomic(p, obj)


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict[str, Any]], *, durable: bool = False) -> None:
    text = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows)
    write_text_atomic(path, text, durable=durable)


def write_text_atomic(path: str | Path, text: str, *, durable: bool = False) -> None:
    """Write through a temporary file and a rename. `durable` also fsyncs the file and its folder, so
    the new content survives a power cut once this returns (what a reviewer's answer needs; a stage's
    output, rewritten by a rerun, does not pay for it)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, p)
    if durable and hasattr(os, "O_DIRECTORY"):  # the rename itself is durable once the folder is synced
        fd = os.open(p.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_text(path: str | Path, what: str = "file") -> str:
    """A UTF-8 text file the user named; a missing or undecodable one is an `InputError` naming it."""
    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{what} not found", path=str(p)) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} is not UTF-8 text ({exc.reason})", path=str(p)) from None


def load_yaml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """A YAML mapping; a missing or unparseable file, or one that is not a mapping, is an `InputError`
    naming the file (and the line, for a syntax error). An empty file is an empty mapping."""

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{what} not found", path=str(p)) from None
    except yaml.YAMLError as exc:
        raise yaml_error(exc, p) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"expected a mapping of options, got {type(data).__name__}", path=str(p))
    return data


def yaml_error(exc: Exception, path: str | Path) -> InputError:
    """The `InputError` of a YAML syntax error: the file, the line, what the parser found."""
    mark = getattr(exc, "problem_mark", None)
    return InputError(
        f"unparseable YAML ({getattr(exc, 'problem', None) or exc})",
        path=str(path),
        line=mark.line + 1 if mark is not None else None,
    )


def read_json(path: str | Path) -> Any:
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("file not found", path=str(p)) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"unparseable JSON ({exc.msg})", path=str(p), line=exc.lineno) from None
