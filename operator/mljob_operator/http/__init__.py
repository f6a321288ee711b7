"""The operator's HTTP API: data intake and results, served on kopf's event loop."""
