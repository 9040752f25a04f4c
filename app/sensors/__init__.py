"""Sensors area: ingestion, storage, detection and episodes of IIoT readings (temperature, pH, DO, ...).

It owns the maths that turns a window of one sensor's readings into alarms and episodes (`detection`) and
the multivariate PCA monitor across sensors (`multivariate`). It does not own the plant hierarchy (`plant`)
nor the review of what it finds (`review`). Kept import-free so the pure maths load without Flask or the
database.
"""
