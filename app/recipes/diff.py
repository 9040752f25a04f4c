"""The difference between two recipe documents, as a reviewer reads it: steps, parameters, limits, text.

`diff_documents(old, new)` returns a flat list of `Change`s, each naming what changed in words (the step or
parameter and the field), the JSON path of the element in the new (or old) document, and the old and new
values. Steps (phases) are matched by key, so a moved step shows as moved, not as removed and added; captures
by key, material lines by material code. The list is what the reviewer sees and what is stored with the
approval signature (`RecipeVersionDiff`).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from app.recipes.document import LIMIT_FIELDS, RecipeDocument, to_data

Category = Literal["header", "steps", "parameters", "limits", "text", "materials"]
Kind = Literal["added", "removed", "changed", "moved"]

#: Fields whose values are prose: shown as a line diff.
TEXT_FIELDS = frozenset({"instructions", "description"})


@dataclass(frozen=True)
class Change:
    """One difference between two versions."""

    category: Category
    kind: Kind
    #: What changed, in words: `step 'inoculate' capture 'volume' high limit`.
    label: str
    #: JSON path of the element (in the new document; in the old one for removals).
    path: str
    old: Any = None
    new: Any = None
    #: For text: a unified line diff.
    text_diff: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Return the change as JSON-ready data (stored with the approval)."""
        data = asdict(self)
        data["text_diff"] = list(self.text_diff)
        return data


def _show(value: Any) -> Any:
    """Values as stored: scalars stay, structures are written as compact JSON text."""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return value


def _text_diff(old: Any, new: Any) -> tuple[str, ...]:
    a, b = str(old or "").splitlines(), str(new or "").splitlines()
    return tuple(line for line in difflib.unified_diff(a, b, "before", "after", lineterm="", n=1))[2:]


def _field_category(field: str, default: Category) -> Category:
    last = field.rsplit(".", 1)[-1]
    if last in LIMIT_FIELDS:
        return "limits"
    if last in TEXT_FIELDS:
        return "text"
    return default


_FIELD_WORDS = {"low": "low limit", "high": "high limit", "alarm_low": "low alarm limit",
                "alarm_high": "high alarm limit", "target": "target"}


def _field_words(field: str) -> str:
    parts = field.split(".")
    parts[-1] = _FIELD_WORDS.get(parts[-1], parts[-1].replace("_", " "))
    return " ".join(p.replace("_", " ") for p in parts[:-1]) + (" " if len(parts) > 1 else "") + parts[-1]


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _compare(old: Mapping[str, Any], new: Mapping[str, Any], *, label: str, path: str, default: Category,
             skip: Iterable[str] = ()) -> list[Change]:
    """Compare two flat-ish records field by field (nested dicts flattened, lists compared whole)."""
    skipped = set(skip)
    a, b = _flatten(old), _flatten(new)
    out = []
    for field in sorted(a.keys() | b.keys()):
        if field.split(".")[0] in skipped or a.get(field) == b.get(field):
            continue
        category = _field_category(field, default)
        out.append(Change(category=category, kind="changed", label=f"{label} {_field_words(field)}",
                          path=f"{path}.{field}", old=_show(a.get(field)), new=_show(b.get(field)),
                          text_diff=_text_diff(a.get(field), b.get(field)) if category == "text" else ()))
    return out


def _keyed(items: Sequence[Mapping[str, Any]], key: str) -> dict[str, tuple[int, Mapping[str, Any]]]:
    out: dict[str, tuple[int, Mapping[str, Any]]] = {}
    for i, item in enumerate(items):
        out.setdefault(str(item.get(key)), (i, item))
    return out


def _compare_list(old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]], *, key: str, noun: str,
                  owner: str, path: str, category: Category) -> list[Change]:
    """Compare lists of keyed records (captures, material lines): added, removed, changed."""
    a, b = _keyed(old, key), _keyed(new, key)
    out = []
    for k in sorted(b.keys() - a.keys(), key=lambda k: b[k][0]):
        out.append(Change(category=category, kind="added", label=f"{owner} {noun} {k!r}",
                          path=f"{path}[{b[k][0]}]", new=_show(dict(b[k][1]))))
    for k in sorted(a.keys() - b.keys(), key=lambda k: a[k][0]):
        out.append(Change(category=category, kind="removed", label=f"{owner} {noun} {k!r}",
                          path=f"{path}[{a[k][0]}]", old=_show(dict(a[k][1]))))
    for k in sorted(a.keys() & b.keys(), key=lambda k: b[k][0]):
        out.extend(_compare(a[k][1], b[k][1], label=f"{owner} {noun} {k!r}", path=f"{path}[{b[k][0]}]",
                            default=category, skip=(key,)))
    return out


def _phase_index(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every phase with where it sits: unit procedure, operation, position and path."""
    out: dict[str, dict[str, Any]] = {}
    order = 0
    for u, up in enumerate(data["procedure"]["unit_procedures"]):
        for o, op in enumerate(up["operations"]):
            for p, ph in enumerate(op["phases"]):
                out.setdefault(ph["key"], {"phase": ph, "up": up["key"], "op": op["key"], "order": order,
                                           "up_equipment": up.get("equipment_class"),
                                           "path": f"procedure.unit_procedures[{u}].operations[{o}].phases[{p}]"})
                order += 1
    return out


def _moved(old_order: list[str], new_order: list[str]) -> set[str]:
    """Keys whose relative order changed: those outside the longest common subsequence."""
    matcher = difflib.SequenceMatcher(a=old_order, b=new_order, autojunk=False)
    kept = {old_order[i + k] for i, _, size in matcher.get_matching_blocks() for k in range(size)}
    return set(old_order) - kept


def _diff_structure(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Change]:
    """Unit procedures and operations: added, removed, renamed, equipment class."""
    out = []
    ups_a = _keyed(a["procedure"]["unit_procedures"], "key")
    ups_b = _keyed(b["procedure"]["unit_procedures"], "key")
    for k in sorted(ups_b.keys() - ups_a.keys(), key=lambda k: ups_b[k][0]):
        out.append(Change(category="steps", kind="added", label=f"unit procedure {k!r}",
                          path=f"procedure.unit_procedures[{ups_b[k][0]}]", new=ups_b[k][1].get("name")))
    for k in sorted(ups_a.keys() - ups_b.keys(), key=lambda k: ups_a[k][0]):
        out.append(Change(category="steps", kind="removed", label=f"unit procedure {k!r}",
                          path=f"procedure.unit_procedures[{ups_a[k][0]}]", old=ups_a[k][1].get("name")))
    for k in sorted(ups_a.keys() & ups_b.keys(), key=lambda k: ups_b[k][0]):
        (_, ua), (ui, ub) = ups_a[k], ups_b[k]
        path = f"procedure.unit_procedures[{ui}]"
        out.extend(_compare({f: ua.get(f) for f in ("name", "equipment_class")},
                            {f: ub.get(f) for f in ("name", "equipment_class")},
                            label=f"unit procedure {k!r}", path=path, default="steps"))
        ops_a, ops_b = _keyed(ua["operations"], "key"), _keyed(ub["operations"], "key")
        for ok in sorted(ops_b.keys() - ops_a.keys(), key=lambda x: ops_b[x][0]):
            out.append(Change(category="steps", kind="added", label=f"operation {ok!r} in {k!r}",
                              path=f"{path}.operations[{ops_b[ok][0]}]", new=ops_b[ok][1].get("name")))
        for ok in sorted(ops_a.keys() - ops_b.keys(), key=lambda x: ops_a[x][0]):
            out.append(Change(category="steps", kind="removed", label=f"operation {ok!r} in {k!r}",
                              path=f"{path}.operations[{ops_a[ok][0]}]", old=ops_a[ok][1].get("name")))
        for ok in sorted(ops_a.keys() & ops_b.keys(), key=lambda x: ops_b[x][0]):
            if ops_a[ok][1].get("name") != ops_b[ok][1].get("name"):
                out.append(Change(category="steps", kind="changed", label=f"operation {ok!r} name",
                                  path=f"{path}.operations[{ops_b[ok][0]}].name", old=ops_a[ok][1].get("name"),
                                  new=ops_b[ok][1].get("name")))
    return out


def _diff_phases(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Change]:
    out = []
    pa, pb = _phase_index(a), _phase_index(b)
    for k in sorted(pb.keys() - pa.keys(), key=lambda k: pb[k]["order"]):
        out.append(Change(category="steps", kind="added", label=f"step {k!r} ({pb[k]['phase']['name']})",
                          path=pb[k]["path"], new=f"in operation {pb[k]['op']!r}"))
    for k in sorted(pa.keys() - pb.keys(), key=lambda k: pa[k]["order"]):
        out.append(Change(category="steps", kind="removed", label=f"step {k!r} ({pa[k]['phase']['name']})",
                          path=pa[k]["path"], old=f"in operation {pa[k]['op']!r}"))
    common_old = [k for k in sorted(pa, key=lambda k: pa[k]["order"]) if k in pb]
    common_new = [k for k in sorted(pb, key=lambda k: pb[k]["order"]) if k in pa]
    moved = _moved(common_old, common_new)
    for k in common_new:
        old, new = pa[k], pb[k]
        owner = f"step {k!r}"
        if k in moved or (old["up"], old["op"]) != (new["up"], new["op"]):
            before = common_old[common_old.index(k) - 1] if common_old.index(k) else None
            after = common_new[common_new.index(k) - 1] if common_new.index(k) else None
            out.append(Change(category="steps", kind="moved", label=owner, path=new["path"],
                              old=f"{old['up']}/{old['op']}, after {before!r}" if before else
                              f"{old['up']}/{old['op']}, first",
                              new=f"{new['up']}/{new['op']}, after {after!r}" if after else
                              f"{new['up']}/{new['op']}, first"))
        ph_a, ph_b = old["phase"], new["phase"]
        out.extend(_compare({f: v for f, v in ph_a.items() if f not in ("captures", "materials")},
                            {f: v for f, v in ph_b.items() if f not in ("captures", "materials")},
                            label=owner, path=new["path"], default="steps", skip=("key",)))
        out.extend(_compare_list(ph_a.get("captures", []), ph_b.get("captures", []), key="key", noun="capture",
                                 owner=owner, path=f"{new['path']}.captures", category="steps"))
        out.extend(_compare_list(ph_a.get("materials", []), ph_b.get("materials", []), key="material",
                                 noun="material", owner=owner, path=f"{new['path']}.materials",
                                 category="materials"))
    return out


def diff_documents(old: RecipeDocument | Mapping[str, Any] | None,
                   new: RecipeDocument | Mapping[str, Any]) -> list[Change]:
    """Return every difference from `old` to `new` (all of `new` as added when there is no `old`)."""
    b = to_data(new) if isinstance(new, RecipeDocument) else dict(new)
    if old is None:
        return [Change(category="header", kind="added", label="first version of the recipe", path="$",
                       new=b["header"]["recipe_code"])]
    a = to_data(old) if isinstance(old, RecipeDocument) else dict(old)
    out = _compare(a["header"], b["header"], label="header", path="header", default="header")
    out.extend(_compare_list(a["formula"]["parameters"], b["formula"]["parameters"], key="key",
                             noun="parameter", owner="formula", path="formula.parameters", category="parameters"))
    out.extend(_compare_list(a["materials"], b["materials"], key="code", noun="line", owner="bill of materials",
                             path="materials", category="materials"))
    out.extend(_diff_structure(a, b))
    out.extend(_diff_phases(a, b))
    return out


def summarise(changes: Sequence[Change]) -> dict[str, int]:
    """Count changes per category, for a one-line summary."""
    counts: dict[str, int] = {}
    for change in changes:
        counts[change.category] = counts.get(change.category, 0) + 1
    return counts
