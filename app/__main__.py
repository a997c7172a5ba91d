"""`python -m app`: serve the API with Uvicorn on HOST:PORT."""

from __future__ import annotations

import sys

import uvicorn
from pydantic import ValidationError

from app.config import Settings


def main() -> None:
    try:
        settings = Settings()
    except ValidationError as exc:
        for error in exc.errors():
            print(f"Refusing to start: {error['msg']}", file=sys.stderr)
        sys.exit(2)
    uvicorn.run(
        "app.main:app",
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        # Open streams may run this long after a stop signal; then the runs themselves
        # get SHUTDOWN_TIMEOUT more before they are cancelled.
        timeout_graceful_shutdown=max(1, int(settings.shutdown_timeout)),
    )


if __name__ == "__main__":
    main()
