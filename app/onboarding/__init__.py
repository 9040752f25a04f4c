"""Onboarding area: the guided first-line flow, its checklist, and CSV/XLSX imports of plant and material data.

Owns: `OnboardingStep` (skipped steps), `DataImport` (uploaded files, their row-by-row preview and outcome), the
import templates, and the invite step (a minimal invite until the accounts area ships e-mail invitations).
Does not own: the records it creates — it calls `app.plant.services` and `app.materials.services`.
"""
