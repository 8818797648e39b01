"""Old preference data in: files or a Hub dataset, TRL's formats or raw PKU-SafeRLHF rows.

`load_pairs` is the one edge where data is validated. Every problem names the file, the
line (JSONL, CSV) or the 1-based row (JSON arrays, Parquet, Hub datasets) and the field.
By default the first bad row stops the load with an `InputError`; with `skip_bad=True` bad
rows are listed in `LoadResult.skipped` instead and the rest is loaded.

Accepted row shapes (TRL's preference formats):

- standard: `prompt`, `chosen`, `rejected` are strings;
- conversational: `prompt` is a list of `{role, content}` messages (multi-turn kept whole) and
  `chosen` / `rejected` are lists of messages ending with the assistant's turn;
- implicit prompt: no `prompt` (or a plain-text one, which TRL ignores too); `chosen` and
  `rejected` are whole conversations that share every turn but the final assistant turn, and
  that shared part becomes the prompt.

Columns other than those stay in `pair.meta` (a label judge reads its verdict columns there),
together with `source` and `row` (the 0-based index of the record, as in `dataset[row]`) unless
the data has columns of those names.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from trace_realign.data.pku import PKU_REQUIRED, pku_row_to_pair
from trace_realign.errors import InputError
from trace_realign.io import read_jsonl
from trace_realign.schema import Message, PreferencePair

# Imported inside functions: datasets and pyarrow are imported inside the readers that need them (a Hub id, a Parquet file):
# a JSONL triage never loads them.

FILE_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
FORMATS = ("auto", "trl", "pku")
TRL_COLUMNS = ("prompt", "chosen", "rejected")


class SkippedRow(NamedTuple):
    """A row left out under `skip_bad`: where it is and what was wrong with it."""

    path: str
    line: int | None
    field: str | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()

    def __str__(self) -> str:
        return str(InputError(self.message, path=self.path, line=self.line, field=self.field))


@dataclass
class LoadResult:
    pairs: list[PreferencePair]
    skipped: list[SkippedRow] = field(default_factory=list)
    # rows left out by a rule of the format rather than for being malformed, e.g. PKU-SafeRLHF rows
    # whose safer_response_id is not 0 or 1: {reason: count}
    dropped: dict[str, int] = field(default_factory=dict)
    source: str = ""
    format: str = ""
    rows_read: int = 0

    def summary(self) -> dict[str, Any]:
        ids = [p.id for p in self.pairs]
        return {
            "source": self.source,
            "format": self.format,
            "rows_read": self.rows_read,
            "pairs": len(self.pairs),
            "duplicate_pairs": len(ids) - len(set(ids)),
            "skipped_rows": len(self.skipped),
            "skipped": [s.to_dict() for s in self.skipped],
            "dropped": dict(self.dropped),
        }


class Record(NamedTuple):
    """One raw row and where it came from; `error` is set when the row could not even be parsed."""

    index: int  # 0-based position among the records
    line: int  # line (JSONL, CSV) or 1-based row (others): what messages show
    row: dict[str, Any] | None
    error: str | None = None


# A row converter turns one raw row into a pair, or None when a rule of the format drops it
# (it then records why in `dropped`). It raises InputError (with `field`) for a bad row.
RowConverter = Callable[[dict[str, Any], Record, str, dict[str, int]], PreferencePair | None]


def load_pairs(
    source: str | Path | Iterable[dict[str, Any]],
    *,
    format: str | None = None,
    split: str = "train",
    skip_bad: bool = False,
    limit: int | None = None,
    name: str | None = None,
) -> LoadResult:
    """Load old preference pairs `(x, y_w, y_l)` from a file, a folder or Hub dataset id, or rows.

    `source`: a `.jsonl`/`.json`/`.parquet`/`.csv` file; a local dataset folder or a Hub dataset id
    (read with `datasets.load_dataset(source, name, split=split)`); or an in-memory iterable of row
    dicts (a `datasets.Dataset` works). `format`: `"trl"`, `"pku"` (raw PKU-SafeRLHF rows) or
    `None`/`"auto"` to tell from the columns. `limit` stops after that many pairs.
    """
    fmt = (format or "auto").lower()
    if fmt not in FORMATS:
        raise InputError(f"unknown data format '{format}' (choose from {', '.join(FORMATS)})")
    if limit is not None and limit < 0:
        raise InputError(f"limit must be >= 0, got {limit}")
    label, records, columns = _open(source, split=split, name=name)
    result = LoadResult(pairs=[], source=label)
    converter: RowConverter | None = None
    for rec in records:
        if limit is not None and len(result.pairs) >= limit:
            break
        result.rows_read += 1
        try:
            if rec.error is not None:
                raise InputError(rec.error, path=label, line=rec.line)
            assert rec.row is not None
            if converter is None:
                # The format is decided once, from the first parseable row (or the dataset's columns).
                fmt = _detect_format(columns or list(rec.row)) if fmt == "auto" else fmt
                converter = _converter(fmt)
                result.format = fmt
            pair = converter(rec.row, rec, label, result.dropped)
        except InputError as exc:
            if not skip_bad:
                raise
            result.skipped.append(SkippedRow(label, exc.line, exc.field, exc.detail))
            continue
        if pair is not None:
            result.pairs.append(pair)
    if not result.format:
        result.format = fmt
    return result


def _converter(fmt: str) -> RowConverter:
    if fmt == "pku":
        return pku_row_to_pair
    return trl_row_to_pair


def _detect_format(columns: list[str]) -> str:

    if all(c in columns for c in PKU_REQUIRED):
        return "pku"
    return "trl"


# --------------------------------------------------------------------------------------- reading


def _open(
    source: str | Path | Iterable[dict[str, Any]], *, split: str, name: str | None
) -> tuple[str, Iterator[Record], list[str] | None]:
    """Return (label for messages, records, column names when the container knows them)."""
    if not isinstance(source, (str, Path)):
        columns = list(getattr(source, "column_names", None) or []) or None
        return "<rows>", _records_from_rows(source), columns
    path = Path(source)
    kind = FILE_SUFFIXES.get(path.suffix.lower())
    if path.is_file():
        if kind is None:
            raise InputError(
                f"unknown file type '{path.suffix}' (use .jsonl, .json, .parquet or .csv)", path=str(path)
            )
        if kind == "json":
            return str(path), _read_json(path, split), None
        reader = {"jsonl": _read_jsonl, "parquet": _read_parquet, "csv": _read_csv}[kind]
        return str(path), reader(path), None
    if not path.is_dir() and (kind is not None or str(source).startswith((".", "/", "~"))):
        raise InputError("file not found", path=str(path))
    # A local dataset folder or a Hub dataset id: both go through `datasets`, as TRL users expect.
    ds = _load_hf_dataset(str(source), split=split, name=name)
    return str(source), _records_from_rows(ds), list(ds.column_names)


def _load_hf_dataset(source: str, *, split: str, name: str | None):
    import datasets

    try:
        ds = datasets.load_dataset(source, name, split=split)
    except Exception as exc:  # datasets raises many kinds; all mean "cannot load this"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise InputError(f"cannot load dataset (split '{split}'): {first}", path=source) from None
    if not isinstance(ds, datasets.Dataset):
        raise InputError(f"expected one split, got {type(ds).__name__}", path=source)
    return ds


def _records_from_rows(rows: Iterable[Any]) -> Iterator[Record]:
    for i, row in enumerate(rows):
        if isinstance(row, dict):
            yield Record(i, i + 1, row)
        else:
            yield Record(i, i + 1, None, f"expected a row object, got {type(row).__name__}")


def _read_jsonl(path: Path) -> Iterator[Record]:
    # a bad line becomes a Record carrying its error, in file order, so skip_bad can go on past it
    bad: list[InputError] = []
    index = 0
    for n, row in read_jsonl(path, on_bad_line=bad.append):
        for error in bad:
            yield Record(index, error.line or 0, None, error.detail)
            index += 1
        bad.clear()
        yield Record(index, n, row)
        index += 1
    for error in bad:
        yield Record(index, error.line or 0, None, error.detail)
        index += 1


def _read_json(path: Path, split: str) -> Iterator[Record]:
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":
            # `datasets` also reads JSON lines from a .json file; so do we.
            yield from _read_jsonl(path)
            return
        raise InputError(
            f"unparseable JSON ({exc.msg} at column {exc.colno})", path=str(path), line=exc.lineno
        ) from None
    if isinstance(data, dict):
        # {"train": [...], "test": [...]} holds splits; {"data": [...]} holds one array
        lists = [k for k, v in data.items() if isinstance(v, list)]
        key = split if isinstance(data.get(split), list) else (lists[0] if len(lists) == 1 else None)
        if key is None:
            raise InputError(
                f"expected a JSON array of rows, or an object holding one array or a '{split}' array",
                path=str(path),
            )
        data = data[key]
    if not isinstance(data, list):
        raise InputError(f"expected a JSON array of rows, got {type(data).__name__}", path=str(path))
    yield from _records_from_rows(data)


def _read_parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow's errors for a bad file vary by version
        raise InputError(f"not a readable Parquet file ({exc})", path=str(path)) from None
    index = 0
    for batch in pf.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            yield Record(index, index + 1, row)
            index += 1


def _read_csv(path: Path) -> Iterator[Record]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        index, start = 0, 2
        for row in reader:
            extra = row.pop(None, None)  # type: ignore[call-overload]  # cells beyond the header
            if extra:
                yield Record(index, start, None, f"{len(extra)} more cells than the header has columns")
            else:
                yield Record(index, start, {k: _csv_cell(v) for k, v in row.items()})
            index, start = index + 1, reader.line_num + 1


def _csv_cell(value: str | None) -> Any:
    # CSV has only strings; conversations exported to CSV come as JSON text, so read those back.
    if value is not None and value.lstrip().startswith("[{"):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            return value
        if isinstance(parsed, list) and all(isinstance(m, dict) and "role" in m for m in parsed):
            return parsed
    return value


# ------------------------------------------------------------------------------ TRL row -> pair


def trl_row_to_pair(row: dict[str, Any], rec: Record, path: str, dropped: dict[str, int]) -> PreferencePair:
    """One TRL preference row (standard, conversational or implicit-prompt) -> a pair."""

    def bad(message: str, fld: str) -> InputError:
        return InputError(message, path=path, line=rec.line, field=fld)

    for col in ("chosen", "rejected"):
        if col not in row or row[col] is None:
            raise bad("missing", col)
    chosen, rejected = row["chosen"], row["rejected"]
    prompt_val = row.get("prompt")
    has_prompt = prompt_val is not None
    if isinstance(prompt_val, str) and isinstance(chosen, list) and isinstance(rejected, list):
        # Some datasets add a plain-text prompt column beside whole conversations; like TRL's
        # maybe_extract_prompt, the conversations then carry the prompt and the column is ignored.
        has_prompt = False

    if isinstance(chosen, str) or isinstance(rejected, str):
        # Standard form: three strings. (TRL's implicit prompt exists only for conversations here:
        # splitting two strings at their common prefix would cut words in half.)
        if not has_prompt:
            raise bad("missing (string chosen/rejected need a prompt column)", "prompt")
        prompt = _text(prompt_val, "prompt", bad)
        chosen_text = _text(chosen, "chosen", bad)
        rejected_text = _text(rejected, "rejected", bad)
    else:
        prefix = _messages(prompt_val, "prompt", bad) if has_prompt else []
        if has_prompt and not prefix:
            raise bad("empty", "prompt")
        full_c = prefix + _messages(chosen, "chosen", bad)
        full_r = prefix + _messages(rejected, "rejected", bad)
        chosen_text = _final_assistant(full_c, "chosen", bad)
        rejected_text = _final_assistant(full_r, "rejected", bad)
        if full_c[:-1] != full_r[:-1]:
            fld = "rejected" if has_prompt else "chosen/rejected"
            raise bad("the conversations differ before the final assistant turn", fld)
        prompt_msgs = full_c[:-1]
        if not prompt_msgs:
            raise bad("missing (no turns before the final assistant turn)", "prompt")
        prompt = prompt_msgs
    # a row written by `PreferencePair.to_dict` (a stage's output, the scenario's pairs) carries its
    # metadata under "meta": it stays one level deep, next to any other extra column
    meta = dict(row["meta"]) if isinstance(row.get("meta"), dict) else {}
    meta.update({k: v for k, v in row.items() if k not in TRL_COLUMNS and k not in ("id", "meta")})
    meta.setdefault("source", path)
    meta.setdefault("row", rec.index)
    return PreferencePair(prompt, chosen_text, rejected_text, meta)


def _text(value: Any, fld: str, bad: Callable[[str, str], InputError]) -> str:
    if not isinstance(value, str):
        raise bad(f"wrong type: expected a string, got {_type_name(value)}", fld)
    if not value.strip():
        raise bad("empty", fld)
    return value


def _messages(value: Any, fld: str, bad: Callable[[str, str], InputError]) -> list[Message]:
    if not isinstance(value, list):
        raise bad(f"wrong type: expected a list of messages, got {_type_name(value)}", fld)
    if not value:
        raise bad("empty", fld)
    out: list[Message] = []
    for i, m in enumerate(value):
        where = f"{fld}[{i}]"
        if not isinstance(m, dict):
            raise bad(f"wrong type: expected a {{role, content}} message, got {_type_name(m)}", where)
        for key in ("role", "content"):
            if key not in m or m[key] is None:
                raise bad("missing", f"{where}.{key}")
            if not isinstance(m[key], str):
                raise bad(f"wrong type: expected a string, got {_type_name(m[key])}", f"{where}.{key}")
        if not m["role"].strip():
            raise bad("empty", f"{where}.role")
        # Keep only role and content: the pair id hashes the prompt, and stray keys (None-filled
        # by Arrow schemas, for instance) must not change it.
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _final_assistant(msgs: list[Message], fld: str, bad: Callable[[str, str], InputError]) -> str:
    last = msgs[-1]
    where = f"{fld}[-1]"
    if last["role"] != "assistant":
        raise bad(f"the final turn must be the assistant's, got role '{last['role']}'", f"{where}.role")
    if not last["content"].strip():
        raise bad("empty", f"{where}.content")
    return last["content"]


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )
