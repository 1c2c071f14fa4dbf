"""The JSON-RPC 2.0 partner API (a second front door to the same services as the REST API)."""
