"""The review-by-exception rule set: one class per kind of off-script event, with severity, blocking and signatures.

The default set ships in `tenants/review_rules.json` (versioned). A tenant overrides, per class, the severity
(one level, or one per criticality of the crossed parameter), whether it blocks release until a deviation is
closed, and how many signatures (1 or 2, by different people) its disposition needs. The effective set is the
default merged with the tenant's latest override version; its version string `"<default>+t<n>"` is stamped on
every RBE run and disposition, so a later change of the rules never rewrites what a reviewer saw.

Pure: no database access (the tenant's overrides are read by `app.review.services.current_rule_set`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from app.core.errors import ValidationError

RULES_FILE = Path(__file__).resolve().parents[2] / "tenants" / "review_rules.json"
SEVERITIES = ("critical", "major", "minor")
#: Criticalities of recipe parameters (app.recipes.document), plus the fallback key.
CRITICALITIES = ("critical", "key", "non_key", "default")
#: Class of an exception type no rule names (a type added to the engine later): reviewed, never lost.
UNCLASSIFIED = "unclassified"
SEVERITY_RANK = {"critical": 0, "major": 1, "minor": 2}


@dataclass(frozen=True)
class Rule:
    """How one class of exceptions is reviewed."""

    code: str
    label: str
    types: tuple[str, ...]
    #: One severity, or a map looked up by exception type, then criticality, then "default".
    severity: str | dict[str, str]
    #: True: the exception cannot simply be accepted; it must be escalated to a deviation closed before release.
    blocking: bool
    #: Signatures a disposition needs (1, or 2 by different people).
    signatures: int

    def severity_for(self, criticality: str | None = None, exception_type: str | None = None) -> str:
        """The severity of an exception of this class (by its type, then the crossed parameter's criticality)."""
        if isinstance(self.severity, str):
            return self.severity
        for key in (exception_type, criticality, "default"):
            if key and key in self.severity:
                return self.severity[key]
        return "major"

    def blocks(self, severity: str) -> bool:
        """True when an exception of this class and severity needs a closed deviation before release."""
        return self.blocking or severity == "critical"

    def as_dict(self) -> dict[str, Any]:
        """JSON form (stamped on RBE runs)."""
        return {"label": self.label, "types": list(self.types), "severity": self.severity,
                "blocking": self.blocking, "signatures": self.signatures}


@dataclass(frozen=True)
class RuleSet:
    """The effective rules of one tenant at one version."""

    version: str
    rules: dict[str, Rule]
    #: The tenant's overrides this set was built from ({} = the shipped default).
    overrides: dict[str, Any] = field(default_factory=dict)
    #: Exception type -> class.
    index: dict[str, str] = field(default_factory=dict)
    #: Numeric settings of the checks (sensor gap threshold).
    settings: dict[str, float] = field(default_factory=dict)

    def gap_threshold_s(self, sampling_period_s: float) -> float:
        """Longest tolerated time without a good reading of a sensor in a critical phase, in seconds."""
        return max(float(self.settings.get("sensor_gap_periods", 3)) * sampling_period_s,
                   float(self.settings.get("sensor_gap_min_s", 10)))

    def class_of(self, exception_type: str) -> str:
        """The class an exception type belongs to (UNCLASSIFIED when no rule names it)."""
        return self.index.get(exception_type, UNCLASSIFIED)

    def rule(self, code: str) -> Rule:
        """The rule of a class (a permissive one for UNCLASSIFIED)."""
        found = self.rules.get(code)
        if found is not None:
            return found
        return Rule(UNCLASSIFIED, "Other exception", (), "major", False, 1)

    def classify(self, exception_type: str, *, criticality: str | None = None,
                 raised_severity: str | None = None) -> tuple[str, str, bool, int]:
        """(class, severity, blocks release, signatures) of one exception under this rule set."""
        code = self.class_of(exception_type)
        rule = self.rule(code)
        severity = rule.severity_for(criticality, exception_type)
        if code == UNCLASSIFIED and raised_severity in SEVERITIES:
            severity = raised_severity
        return code, severity, rule.blocks(severity), rule.signatures

    def as_dict(self) -> dict[str, Any]:
        """JSON snapshot of the whole set (what an RBE run was judged by)."""
        return {"version": self.version, "classes": {k: r.as_dict() for k, r in self.rules.items()},
                "settings": self.settings, "overrides": self.overrides}


@lru_cache(maxsize=4)
def _load(path: str) -> dict[str, Any]:
    data = json.loads(Path(path).read_text())
    if data.get("schema") != "batchline.review-rules/1":
        raise ValueError(f"{path}: not a batchline.review-rules/1 document")
    return data


def default_document(path: Path | None = None) -> dict[str, Any]:
    """The shipped default rule set document."""
    return _load(str(path or RULES_FILE))


def default_version(path: Path | None = None) -> str:
    """Version of the shipped default rule set."""
    return str(default_document(path)["version"])


def _check_severity(value: Any, where: str, types: tuple[str, ...] = ()) -> str | dict[str, str]:
    if isinstance(value, str):
        if value not in SEVERITIES:
            raise ValidationError(f"{where}: severity {value!r} is not one of {', '.join(SEVERITIES)}")
        return value
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(CRITICALITIES) - set(types))
        if unknown:
            raise ValidationError(f"{where}: {', '.join(unknown)} is neither a criticality "
                                  f"({', '.join(CRITICALITIES)}) nor an exception type of the class")
        return {str(k): str(_check_severity(v, f"{where} ({k})")) for k, v in value.items()}
    raise ValidationError(f"{where}: severity must be one of {', '.join(SEVERITIES)}")


def clean_overrides(overrides: Any, *, path: Path | None = None) -> dict[str, dict[str, Any]]:
    """Check a tenant's overrides against the default set; the messages name the class and the field."""
    if not isinstance(overrides, dict):
        raise ValidationError("rule overrides must be an object {class: {severity, blocking, signatures}}")
    classes = default_document(path)["classes"]
    clean: dict[str, dict[str, Any]] = {}
    for code, change in overrides.items():
        if code == "settings":
            clean["settings"] = _clean_settings(change)
            continue
        if code not in classes:
            raise ValidationError(f"{code!r} is not an exception class (use one of: {', '.join(sorted(classes))})")
        if not isinstance(change, dict):
            raise ValidationError(f"{code}: the override must be an object with severity, blocking or signatures")
        unknown = sorted(set(change) - {"severity", "blocking", "signatures"})
        if unknown:
            raise ValidationError(f"{code}: {', '.join(unknown)} cannot be changed (only severity, blocking, "
                                  "signatures)")
        item: dict[str, Any] = {}
        if "severity" in change:
            item["severity"] = _check_severity(change["severity"], code, tuple(classes[code]["types"]))
        if "blocking" in change:
            if not isinstance(change["blocking"], bool):
                raise ValidationError(f"{code}: blocking must be true or false")
            item["blocking"] = change["blocking"]
        if "signatures" in change:
            if change["signatures"] not in (1, 2) or isinstance(change["signatures"], bool):
                raise ValidationError(f"{code}: a disposition needs 1 or 2 signatures, not {change['signatures']!r}")
            item["signatures"] = int(change["signatures"])
        if item:
            clean[code] = item
    return clean


#: Settings a tenant may change, with their bounds.
SETTING_BOUNDS = {"sensor_gap_periods": (1.0, 100.0), "sensor_gap_min_s": (0.0, 3600.0)}


def _clean_settings(change: Any) -> dict[str, float]:
    if not isinstance(change, dict):
        raise ValidationError("settings must be an object {name: number}")
    clean = {}
    for name, value in change.items():
        if name not in SETTING_BOUNDS:
            raise ValidationError(f"{name!r} is not a review setting (use one of: {', '.join(SETTING_BOUNDS)})")
        low, high = SETTING_BOUNDS[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= float(value) <= high:
            raise ValidationError(f"{name} must be a number from {low:g} to {high:g}")
        clean[name] = float(value)
    return clean


def build_rule_set(overrides: dict[str, Any] | None = None, *, tenant_version: int | None = None,
                   path: Path | None = None) -> RuleSet:
    """The effective rule set: the shipped default with the tenant's overrides applied."""
    document = default_document(path)
    overrides = overrides or {}
    rules: dict[str, Rule] = {}
    settings = {**{k: float(v) for k, v in document.get("settings", {}).items()}, **overrides.get("settings", {})}
    for code, spec in document["classes"].items():
        merged = {**spec, **overrides.get(code, {})}
        rules[code] = Rule(code=code, label=str(spec["label"]), types=tuple(spec["types"]),
                           severity=merged["severity"], blocking=bool(merged["blocking"]),
                           signatures=int(merged["signatures"]))
    version = str(document["version"]) + (f"+t{tenant_version}" if tenant_version else "")
    index = {t: code for code, rule in rules.items() for t in rule.types}
    return RuleSet(version=version, rules=rules, overrides=overrides, index=index, settings=settings)


def worst(severities: list[str]) -> str | None:
    """The most severe of some severities (None for none)."""
    return min(severities, key=lambda s: SEVERITY_RANK.get(s, 9)) if severities else None
