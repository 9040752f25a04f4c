"""Recipes: ISA-88 master recipes, their versions under change control, and the validated template library.

The area owns master recipes and their versions (`models.py`: the validated document as JSONB with its content
hash, header columns, lifecycle status, effective period, template provenance; draft revisions; the diffs
stored with review and approval signatures; validation runs), the services that import, edit, route, approve,
supersede and retire them (`services.py`; `get_version` and `effective_version` are what batch planning
calls), the recipe version document (schema ``batchline.recipe/1``: header, formula, materials and the
procedure of unit procedures, operations and phases) with its canonical JSON and content hash, scaling to a
batch size (the control recipe a batch executes), editor validation and editor operations, version diffs, the
pure limit and quantity checks the batch engine calls live, BatchML (B2MML-V0600) export and import, the
template library in ``tenants/templates`` with its verification scenarios, their database-free evaluator,
the rule deciding which scenarios still apply to an adapted recipe, and the validation report.

It does not own batch execution, exceptions and their disposition (``batches``, ``review``), materials
and lots (``materials``; recipes only check that the codes they name exist), equipment (``plant``) or
signatures and routes (``esign``; a version's status follows its ``recipe_version`` route).
"""
