"""`python -m app.services.execute.offline_model [PORT]`: the scripted model server alone."""

from __future__ import annotations

import sys

import uvicorn

from app.services.execute.offline_model.server import create_app

if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8765
    print(f"Scripted model server on http://127.0.0.1:{port} (ANTHROPIC_BASE_URL)", flush=True)
    uvicorn.run(create_app(), host="127.0.0.1", port=port, log_level="info")
