"""Protocol bridges (MQTT, OPC UA) that forward plant readings through the ingest API, like any gateway."""
