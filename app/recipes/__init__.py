"""Recipes: ISA-88 master recipes, their versioned documents and the validated template library.

The area owns the recipe version document (schema ``batchline.recipe/1``: header, formula, materials and the
procedure of unit procedures, operations and phases), its canonical JSON and content hash, scaling to a batch
size (the control recipe a batch executes), editor validation, the pure limit and quantity checks the batch
engine calls live, BatchML (B2MML-V0600) export and import, and the template library in ``tenants/templates``
with its verification scenarios and their database-free evaluator.

It does not own batch execution, exceptions and their disposition (``batches``, ``review``), materials
and lots (``materials``), equipment (``plant``) or signatures (``esign``): it only says what a batch must
record and which exceptions a recorded batch must raise.
"""
