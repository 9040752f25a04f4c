"""Home area: the tenant's landing page."""
