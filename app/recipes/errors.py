"""Python exception classes of the recipes area (not to be confused with manufacturing exceptions)."""

from __future__ import annotations

from collections.abc import Sequence

from app.core.errors import ValidationError
from app.recipes.document import Problem


class RecipeInputError(ValidationError):
    """A recipe input was refused (malformed, unknown materials, invalid edit); nothing was stored.

    `problems` point at the offending element: a JSON path (``formula.parameters[3].unit``) or a BatchML
    element path (``MasterRecipe/Formula/Parameter[3]/Value/UnitOfMeasure``), each with what to do.
    """

    def __init__(self, summary: str, problems: Sequence[Problem]) -> None:
        self.summary = summary
        self.problems = list(problems)
        detail = "; ".join(f"{p.path}: {p.message}" for p in self.problems[:20])
        more = f" (and {len(self.problems) - 20} more)" if len(self.problems) > 20 else ""
        super().__init__(f"{summary}: {detail}{more}" if detail else summary)
