"""HTTP face of certfleet (webhooks, status, metrics)."""
