"""Materials area: materials, lots, movements with exact balances, genealogy, and the lot gate.

Owns: `Material`, `Lot`, `LotMovement`, `LotStatusChange`; receiving, consuming, producing and adjusting lots
(NUMERIC balances that can never go negative), QA disposition of lots, forward/backward genealogy traces with
recall impact, and `lot_usable(lot, material, quantity, at)` for the batch area.
Does not own: batches (genealogy refers to them by batch number), recipes' material requirements.
"""

from app.materials.usability import Usability, lot_usable

__all__ = ["Usability", "lot_usable"]
