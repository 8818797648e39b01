"""Raw PKU-SafeRLHF rows -> preference pairs, with each response's safety metadata kept.

The paper's rules (docs/method.md): a row whose `safer_response_id` is not 0 or 1 is dropped and
counted; with one safe and one unsafe response the safe one is chosen; with both safe or both
unsafe the `safer_response_id` response is chosen.

`pair.meta` = `{"source": "pku-saferlhf", "row": N, "chosen": {...}, "rejected": {...}, ...}` where
each side is `{"safe": bool, "harm_categories": ["S6", ...], "severity": int | None, "response_id": 0|1}`.
Harm categories use PKU-SafeRLHF's S1-S19 codes (names in `HARM_CATEGORIES`); a name the table does
not know is kept as written.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from trace_realign.errors import InputError
from trace_realign.schema import PreferencePair

if TYPE_CHECKING:
    from trace_realign.data.loading import Record

PKU_REQUIRED = (
    "prompt",
    "response_0",
    "response_1",
    "is_response_0_safe",
    "is_response_1_safe",
    "safer_response_id",
)
DROPPED_SAFER_ID = "safer_response_id not 0 or 1"

# PKU-SafeRLHF's nineteen harm categories, in the order of its S1-S19 codes.
HARM_CATEGORIES = {
    "S1": "Endangering National Security",
    "S2": "Insulting Behavior",
    "S3": "Discriminatory Behavior",
    "S4": "Endangering Public Health",
    "S5": "Copyright Issues",
    "S6": "Violence",
    "S7": "Drugs",
    "S8": "Privacy Violation",
    "S9": "Economic Crime",
    "S10": "Mental Manipulation",
    "S11": "Human Trafficking",
    "S12": "Physical Harm",
    "S13": "Sexual Content",
    "S14": "Cybercrime",
    "S15": "Disrupting Public Order",
    "S16": "Environmental Damage",
    "S17": "Psychological Harm",
    "S18": "White-Collar Crime",
    "S19": "Animal Abuse",
}
_CODE_OF = {name.lower(): code for code, name in HARM_CATEGORIES.items()}


def harm_code(name: str) -> str:
    """`"Violence"` -> `"S6"`; codes pass through; an unknown name is returned unchanged."""
    if name.upper() in HARM_CATEGORIES:
        return name.upper()
    return _CODE_OF.get(name.strip().lower(), name)


def pku_row_to_pair(
    row: dict[str, Any], rec: Record, path: str, dropped: dict[str, int]
) -> PreferencePair | None:
    """One raw PKU-SafeRLHF row -> a pair, or None (counted in `dropped`) when the paper skips it."""

    def bad(message: str, fld: str) -> InputError:
        return InputError(message, path=path, line=rec.line, field=fld)

    for col in PKU_REQUIRED:
        if col not in row:
            raise bad("missing", col)
    safer = _response_id(row["safer_response_id"], bad)
    if safer is None:
        dropped[DROPPED_SAFER_ID] = dropped.get(DROPPED_SAFER_ID, 0) + 1
        return None
    prompt = _text(row["prompt"], "prompt", bad)
    responses = [_text(row[f"response_{k}"], f"response_{k}", bad) for k in (0, 1)]
    safe = [_bool(row[f"is_response_{k}_safe"], f"is_response_{k}_safe", bad) for k in (0, 1)]

    chosen_id = safe.index(True) if safe[0] != safe[1] else safer
    rejected_id = 1 - chosen_id

    def side(k: int) -> dict[str, Any]:
        return {
            "safe": safe[k],
            "harm_categories": _harm_categories(row.get(f"response_{k}_harm_category"), k, bad),
            "severity": _severity(row.get(f"response_{k}_severity_level"), k, bad),
            "response_id": k,
        }

    meta: dict[str, Any] = {
        "source": "pku-saferlhf",
        "row": rec.index,
        "chosen": side(chosen_id),
        "rejected": side(rejected_id),
        "safer_response_id": safer,
    }
    better = row.get("better_response_id")
    if better is not None:
        meta["better_response_id"] = better
    if row.get("prompt_source") is not None:
        meta["prompt_source"] = row["prompt_source"]
    return PreferencePair(prompt, responses[chosen_id], responses[rejected_id], meta)


def _text(value: Any, fld: str, bad) -> str:
    if value is None:
        raise bad("missing", fld)
    if not isinstance(value, str):
        raise bad(f"wrong type: expected a string, got {type(value).__name__}", fld)
    if not value.strip():
        raise bad("empty", fld)
    return value


def _response_id(value: Any, bad) -> int | None:
    """0 or 1; None for the values the paper skips (missing, NaN, -1, 2, ...)."""
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value) or not value.is_integer():
            return None
        value = int(value)
    if isinstance(value, str):  # CSV
        if not value.strip():
            return None
        try:
            value = int(value.strip())
        except ValueError:
            raise bad(f"wrong type: expected 0 or 1, got '{value}'", "safer_response_id") from None
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad(f"wrong type: expected 0 or 1, got {type(value).__name__}", "safer_response_id")
    return value if value in (0, 1) else None


def _bool(value: Any, fld: str, bad) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):  # CSV
        return value.strip().lower() in ("true", "1")
    if value is None:
        raise bad("missing", fld)
    raise bad(f"wrong type: expected true or false, got {value!r}", fld)


def _harm_categories(value: Any, k: int, bad) -> list[str]:
    fld = f"response_{k}_harm_category"
    if value is None:
        return []
    if isinstance(value, str):  # CSV keeps the dict as JSON text
        if not value.strip():
            return []
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise bad("unparseable JSON (expected an object of category -> true/false)", fld) from None
    if isinstance(value, dict):
        names = [name for name, on in value.items() if on]
    elif isinstance(value, list):
        names = [str(name) for name in value]
    else:
        raise bad(
            f"wrong type: expected an object of category -> true/false, got {type(value).__name__}", fld
        )
    return sorted({harm_code(n) for n in names}, key=_code_order)


def _code_order(code: str) -> tuple[int, str]:
    return (int(code[1:]), "") if code in HARM_CATEGORIES else (100, code)


def _severity(value: Any, k: int, bad) -> int | None:
    fld = f"response_{k}_severity_level"
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    try:
        level = int(value)
    except (TypeError, ValueError):
        raise bad(f"wrong type: expected an integer, got {value!r}", fld) from None
    if isinstance(value, bool) or level != float(value):
        raise bad(f"wrong type: expected an integer, got {value!r}", fld)
    return level
