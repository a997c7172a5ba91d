"""Generated clients of the service's OpenAPI document: see generate.py and docs/clients.md."""
