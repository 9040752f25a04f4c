"""Health area: liveness and readiness probes for the orchestrator."""
