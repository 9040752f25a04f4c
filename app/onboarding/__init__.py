"""Onboarding area: the guided first-line flow, its checklist, and CSV/XLSX imports of plant and material data.

Owns: `OnboardingStep` (skipped steps), `DataImport` (uploaded files, their row-by-row preview and outcome) and
the import templates.
Does not own: the records it creates — it calls `app.plant.services`, `app.materials.services` and, for the
invite step, `app.accounts.services.invite_member`.
"""
