"""A scenario folder: its manifest (`scenario.yaml`), read and checked once, before any work.

A scenario is data. Its folder holds the catalog (pools of topics, phrasings and response
templates), the old and new policy as text and as rule judges, the evaluation judge's cues and the
attack rules; the manifest names those files, the response styles and the kinds of prompt. The
code that builds pairs, splits and `M_ref` (`scenario.generate`, `scenario.mref`) is the same for
every scenario: a new policy shift is a new folder (docs/scenarios.md has the format and a minimal
example).

    source = load_scenario("values")          # a packaged scenario, or the path of a folder
    scenario = build_scenario(ScenarioConfig(), source)

Everything is checked here, with errors that name the file and the field: a missing file, a
malformed catalog entry, a style or kind that names what does not exist, a template that fills in
a field its category lacks, a rules or cues file that does not parse.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from trace_realign.errors import InputError
from trace_realign.evaluate.typed_judge import parse_cues
from trace_realign.io import load_yaml, read_text
from trace_realign.judges.rules import parse_rules
from trace_realign.scenario.catalog import BUILT_IN_FIELDS, Catalog, Category, parse_catalog
from trace_realign.schema import Category as Triage
from trace_realign.schema import Label

DATA_DIR = Path(__file__).parent / "data"
MANIFEST = "scenario.yaml"
# The packaged default keeps its files at the top of data/ (where runs made before scenario folders
# name them); every other packaged scenario has a folder of its own under data/.
DEFAULT_SCENARIO = "embedded"
FILE_ROLES = ("catalog", "old_policy", "new_policy", "old_rules", "new_rules", "eval_judge", "attack_rules")
# the files the written scenario is made from or copies: they (and, but for the default, the
# manifest) enter `ScenarioConfig.fingerprint`
DATA_ROLES = ("catalog", "new_policy", "new_rules", "old_policy", "old_rules")
SHAPES = ("legit", "malicious", "neutral")
ANSWER = "answer"  # the built-in style of the neutral shape: the question's own answer
TOP_FIELDS = {"name", "description", "files", "styles", "kinds", "settings"}
# the manifest's optional line naming the demo settings chosen for this scenario: it shapes no pair
SETTINGS_LINE = "settings:"
KIND_FIELDS = {"triage", "prompt", "request", "categories", "chosen", "rejected", "correction"}


@dataclass(frozen=True)
class Style:
    """A response style: a pool of templates (`templates`, recorded as `label`), or one of
    several styles drawn evenly (`either`)."""

    name: str
    label: str
    templates: tuple[str, ...] = ()
    either: tuple[str, ...] = ()
    key: str = ""  # the catalog list the templates come from


@dataclass(frozen=True)
class Kind:
    """A kind of prompt and the old pair it gets: which prompt shape, which styles win and lose
    under the old policy, the new-policy correction (PUNISH kinds), and the triage category the
    pair has by construction."""

    name: str
    triage: Triage
    prompt: str  # one of SHAPES
    request: str | None  # the legit_requests pool of a legit kind
    categories: tuple[Category, ...]  # what a legit or malicious prompt may be about
    chosen: str
    rejected: str
    correction: str | None

    @property
    def harmful(self) -> bool:
        """Its prompts are requests the new policy says to decline (the stress test wraps them)."""
        return self.prompt == "malicious"

    @property
    def truth(self) -> dict[str, Label]:
        """The new-policy verdict of each response, known from the construction. The needless
        refusal of a neutral pair is left out: whether a policy tolerates it is what judges may
        reasonably differ on."""
        c, nc = Label.COMPLIANT, Label.NON_COMPLIANT
        if self.triage is Triage.INVERT:
            return {"chosen": nc, "rejected": c}
        if self.triage is Triage.PUNISH:
            return {"chosen": nc, "rejected": nc}
        return {"chosen": c} if self.prompt == "neutral" else {"chosen": c, "rejected": nc}


@dataclass(frozen=True)
class ScenarioSource:
    name: str
    folder: Path
    manifest: Path
    files: dict[str, Path]  # FILE_ROLES -> path
    catalog: Catalog
    styles: dict[str, Style]
    kinds: dict[str, Kind]  # in the manifest's order: the order prompts are drawn in
    settings: Path | None = None  # the demo settings chosen on this scenario's validation split

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT_SCENARIO and self.folder == DATA_DIR

    def fingerprint_content(self) -> list[str]:
        """What `ScenarioConfig.fingerprint` hashes besides the settings: the catalog, policies and
        rules, and the manifest but for its `settings` line (the demo's settings shape no pair, and
        the stages they change key on them). The default scenario's manifest holds what was code
        before scenarios were folders, and is left out so that its fingerprint (and the runs keyed
        on it) stays as it was; tests/scenario pins that scenario's output instead."""
        content = [self.files[r].read_text(encoding="utf-8") for r in DATA_ROLES]
        if self.is_default:
            return content
        lines = self.manifest.read_text(encoding="utf-8").splitlines(keepends=True)
        return [*content, "".join(line for line in lines if not line.startswith(SETTINGS_LINE))]


def packaged_scenarios() -> list[str]:
    """The scenarios shipped with the package, by name (the default first)."""
    return [DEFAULT_SCENARIO, *sorted(p.parent.name for p in DATA_DIR.glob(f"*/{MANIFEST}"))]


def scenario_folder(scenario: str | Path) -> Path:
    """The folder of a packaged scenario's name, or a folder (or its manifest) given by path."""
    if isinstance(scenario, str) and scenario == DEFAULT_SCENARIO:
        return DATA_DIR
    if isinstance(scenario, str) and "/" not in scenario and (DATA_DIR / scenario / MANIFEST).is_file():
        return DATA_DIR / scenario
    path = Path(scenario)
    if path.is_file() and path.name == MANIFEST:
        return path.parent
    if path.is_dir():
        return path
    raise InputError(
        f"no such scenario: use one of {', '.join(packaged_scenarios())} or the path of a folder with a "
        f"{MANIFEST}",
        path=str(scenario),
        field="scenario",
    )


def load_scenario(scenario: str | Path = DEFAULT_SCENARIO) -> ScenarioSource:
    """Read and check a scenario (a packaged name or a folder); see the module doc."""
    if isinstance(scenario, str) and scenario == DEFAULT_SCENARIO:
        return default_source()
    return _load(scenario_folder(scenario).resolve())


@lru_cache(maxsize=1)
def default_source() -> ScenarioSource:
    return _load(DATA_DIR)


def _load(folder: Path) -> ScenarioSource:
    manifest = folder / MANIFEST
    data = load_yaml(manifest, "scenario manifest")
    where = str(manifest)
    for key in data:
        if key not in TOP_FIELDS:
            raise InputError(f"unknown key (expected {', '.join(sorted(TOP_FIELDS))})", path=where, field=key)
    name = data.get("name")
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise InputError("missing, or not a plain name", path=where, field="name")
    files = _files(data.get("files"), folder, where)
    catalog = parse_catalog(read_text(files["catalog"], "catalog"), files["catalog"])
    for role in ("old_policy", "new_policy"):
        if not read_text(files[role], "policy").strip():
            raise InputError("the policy text is empty", path=str(files[role]), field=f"files.{role}")
    for role in ("old_rules", "new_rules", "attack_rules"):
        parse_rules(read_text(files[role], "rules file"), str(files[role]))
    parse_cues(read_text(files["eval_judge"], "evaluation judge cues"), str(files["eval_judge"]))
    styles = _styles(data.get("styles"), catalog, where)
    kinds = _kinds(data.get("kinds"), catalog, styles, where)
    settings = _settings(data, folder, where)
    source = ScenarioSource(name, folder, manifest, files, catalog, styles, kinds, settings)
    check_templates(source)
    return source


def _settings(data: dict[str, Any], folder: Path, where: str) -> Path | None:
    """The manifest's `settings` file, if it names one: a file name in the folder, on one line."""
    if "settings" not in data:
        return None
    name = data["settings"]
    path = folder / name if isinstance(name, str) and name.strip() else None
    if path is None or not path.resolve().is_relative_to(folder.resolve()):
        raise InputError("expected the name of a file in the scenario's folder", path=where, field="settings")
    if not path.is_file():
        raise InputError(f"file not found (named by {where})", path=str(path), field="settings")
    return path


def _files(block: Any, folder: Path, where: str) -> dict[str, Path]:
    if not isinstance(block, dict):
        raise InputError(
            f"expected a mapping of {', '.join(FILE_ROLES)} to file names", path=where, field="files"
        )
    out = {}
    for role in FILE_ROLES:
        name = block.get(role)
        if not isinstance(name, str) or not name.strip():
            raise InputError("missing", path=where, field=f"files.{role}")
        path = folder / name
        if not path.is_file():
            raise InputError(f"file not found (named by {where})", path=str(path), field=f"files.{role}")
        out[role] = path
    unknown = sorted(set(block) - set(FILE_ROLES))
    if unknown:
        raise InputError(
            f"unknown file role (expected {', '.join(FILE_ROLES)})", path=where, field=f"files.{unknown[0]}"
        )
    return out


def _styles(block: Any, catalog: Catalog, where: str) -> dict[str, Style]:
    if not isinstance(block, dict) or not block:
        raise InputError("expected a mapping of style names", path=where, field="styles")
    out: dict[str, Style] = {}
    for name, spec in block.items():
        field = f"styles.{name}"
        if name == ANSWER:
            raise InputError(
                f"{ANSWER!r} is the built-in style of the neutral shape", path=where, field=field
            )
        if not isinstance(spec, dict) or set(spec) - {"templates", "label", "either"}:
            raise InputError("expected {templates: CATALOG_KEY, label: ...} or {either: [STYLE, ...]}", path=where,
                             field=field)  # fmt: skip
        if "either" in spec:
            either = spec["either"]
            if not isinstance(either, list) or not either or set(spec) != {"either"}:
                raise InputError("expected a non-empty list of style names alone", path=where, field=field)
            out[name] = Style(name, name, either=tuple(str(s) for s in either))
            continue
        key = spec.get("templates")
        if key not in catalog.templates:
            raise InputError(
                f"no list of templates {key!r} in {catalog.path}", path=where, field=f"{field}.templates"
            )
        label = spec.get("label", name)
        if not isinstance(label, str) or not label:
            raise InputError("expected a string", path=where, field=f"{field}.label")
        out[name] = Style(name, label, templates=catalog.templates[key], key=key)
    for name, style in out.items():
        for sub in style.either:
            if sub not in out or out[sub].either:
                raise InputError(
                    f"{sub!r} is not a style with templates", path=where, field=f"styles.{name}.either"
                )
    return out


def _kinds(block: Any, catalog: Catalog, styles: dict[str, Style], where: str) -> dict[str, Kind]:
    if not isinstance(block, dict) or not block:
        raise InputError("expected a mapping of kind names", path=where, field="kinds")
    return {str(name): _kind(str(name), spec, catalog, styles, where) for name, spec in block.items()}


def _kind(name: str, spec: Any, catalog: Catalog, styles: dict[str, Style], where: str) -> Kind:
    """One kind of the manifest, checked against the catalog (the keys its prompt shape reads)."""
    field = f"kinds.{name}"
    if not isinstance(spec, dict):
        raise InputError("expected a mapping", path=where, field=field)
    for key in spec:
        if key not in KIND_FIELDS:
            raise InputError(
                f"unknown key (expected {', '.join(sorted(KIND_FIELDS))})", path=where, field=f"{field}.{key}"
            )
    try:
        triage = Triage(str(spec.get("triage")).upper())
    except ValueError:
        raise InputError("expected INVERT, PUNISH or RETAIN", path=where, field=f"{field}.triage") from None
    if triage is Triage.UNKNOWN:
        raise InputError("expected INVERT, PUNISH or RETAIN", path=where, field=f"{field}.triage")
    shape = spec.get("prompt")
    if shape not in SHAPES:
        raise InputError(f"expected one of {', '.join(SHAPES)}", path=where, field=f"{field}.prompt")
    needs = {
        "legit": ("exceptions", "legit_intros", "legit_requests"),
        "malicious": ("malicious_requests", "malicious_cues"),
        "neutral": ("neutral_qa", "neutral_prefixes"),
    }[shape]
    for key in needs:
        if not getattr(catalog, key):
            raise InputError(
                f"missing (kind {name} makes {shape} prompts)", path=str(catalog.path), field=key
            )
    request = spec.get("request")
    if shape == "legit" and request not in catalog.legit_requests:
        raise InputError(
            f"expected a key of legit_requests in {catalog.path}", path=where, field=f"{field}.request"
        )
    if shape != "legit" and request is not None:
        raise InputError("only a legit kind has a request pool", path=where, field=f"{field}.request")
    categories = _kind_categories(spec.get("categories"), shape, catalog, where, field)
    roles = {}
    for role in ("chosen", "rejected", "correction"):
        style = spec.get(role)
        if style is None and role == "correction":
            roles[role] = None
            continue
        if style == ANSWER and (shape != "neutral" or role != "chosen"):
            raise InputError(
                f"{ANSWER!r} is the neutral shape's old winner only", path=where, field=f"{field}.{role}"
            )
        if style != ANSWER and style not in styles:
            raise InputError("not a style of `styles`", path=where, field=f"{field}.{role}")
        roles[role] = style
    return Kind(
        name, triage, shape, request, categories, roles["chosen"], roles["rejected"], roles["correction"]
    )


def _kind_categories(
    value: Any, shape: str, catalog: Catalog, where: str, field: str
) -> tuple[Category, ...]:
    """A malicious kind draws from every category (default) or the codes it lists; a legit kind
    from the categories of `exceptions`; a neutral kind from none."""
    if shape == "neutral":
        return ()
    if shape == "legit":
        if value is not None:
            raise InputError(
                "a legit kind draws from the catalog's exceptions", path=where, field=f"{field}.categories"
            )
        return tuple(catalog.by_code[c] for c in sorted(catalog.exceptions))
    if value is None:
        if not catalog.categories:
            raise InputError(
                "missing (a malicious kind needs categories)", path=str(catalog.path), field="categories"
            )
        return catalog.categories
    if not isinstance(value, list) or not value:
        raise InputError(
            "expected a non-empty list of category codes", path=where, field=f"{field}.categories"
        )
    for code in value:
        if code not in catalog.by_code:
            raise InputError(
                f"{code!r} is not a category of {catalog.path}", path=where, field=f"{field}.categories"
            )
    return tuple(catalog.by_code[c] for c in value)


# ---------------------------------------------------------------- every template fills only what it has


def template_fields(template: str) -> set[str]:
    """The field names a template fills in; a malformed template is a `ValueError`."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def style_templates(source: ScenarioSource, style: str | None) -> list[tuple[str, str]]:
    """(catalog key, template) of every template a style may draw."""
    if style is None or style == ANSWER:
        return []
    s = source.styles[style]
    return [(x.key, t) for x in [s, *(source.styles[sub] for sub in s.either)] for t in x.templates]


def check_templates(source: ScenarioSource) -> None:
    """Every prompt part and response template of every kind fills in only fields its category and
    context have; the error names the catalog entry, the field it lacks and where it is drawn."""
    cat = source.catalog
    for kind in source.kinds.values():
        parts: list[tuple[str, str]] = []  # (catalog key, template)
        if kind.prompt == "legit":
            parts += [(f"legit_intros.{c}", t) for c in cat.legit_contexts for t in cat.legit_intros[c]]
            parts += [(f"legit_requests.{kind.request}", t) for t in cat.legit_requests[kind.request or ""]]
        elif kind.prompt == "malicious":
            parts += [("malicious_requests", t) for t in cat.malicious_requests]
        for role in ("chosen", "rejected", "correction"):
            parts += style_templates(source, getattr(kind, role))
        contexts = (
            {c: bool(cat.purpose.get(c)) for c in cat.legit_contexts}
            if kind.prompt == "legit"
            else {"": False}
        )
        for category in kind.categories or (None,):
            have = {"topic", "Topic", *(category.fields if category else {})}
            opened = cat.exceptions.get(category.code, ()) if category and kind.prompt == "legit" else ("",)
            for ctx in opened:
                fields = have | ({"purpose"} if contexts.get(ctx) else set())
                for key, template in parts:
                    _check_one(cat.path, key, template, fields, kind.name, category, ctx)


def _check_one(
    path: Path, key: str, template: str, fields: set[str], kind: str, category: Any, ctx: str
) -> None:
    try:
        used = template_fields(template)
    except ValueError as exc:
        raise InputError(f"malformed template {template!r} ({exc})", path=str(path), field=key) from None
    missing = sorted(used - fields)
    if missing:
        about = f"category {category.code}" if category else "a neutral question"
        extra = f" in context {ctx}" if ctx else ""
        known = ", ".join(sorted(fields))
        raise InputError(
            f"template {template!r} fills in {{{missing[0]}}}, which {about}{extra} (drawn by kind {kind}) "
            f"does not have (it has {known}; built in: {', '.join(BUILT_IN_FIELDS)})",
            path=str(path),
            field=key,
        )
