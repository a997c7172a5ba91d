"""`python -m app`: serve the API with Uvicorn on HOST:PORT."""

from __future__ import annotations

import sys
from types import FrameType

import uvicorn
from pydantic import ValidationError

from app.config import Settings
from app.main import create_app
from app.request_limits import bounded_http_protocol, server_head_limit


class _Server(uvicorn.Server):
    """On a stop signal the service takes no new run at once, and the runs' grace period
    (SHUTDOWN_TIMEOUT) starts then, while Uvicorn drains the open streams."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        app = self.config.app
        executor = getattr(getattr(app, "state", None), "executor", None)
        if executor is not None:
            executor.stop_taking_runs()
        super().handle_exit(sig, frame)


def main() -> None:
    try:
        settings = Settings()
    except ValidationError as exc:
        for error in exc.errors():
            print(f"Refusing to start: {error['msg']}", file=sys.stderr)
        sys.exit(2)
    application = create_app(settings)
    server = _Server(
        uvicorn.Config(
            application,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level.lower(),
            access_log=False,
            # Open streams (runs finishing in the grace period) may go on this long.
            timeout_graceful_shutdown=max(1, int(settings.shutdown_timeout)),
            # httptools would buffer a head of any size: this one stops a little over the
            # header cap, and the app answers 431 past MAX_REQUEST_HEADER_BYTES.
            http=bounded_http_protocol(settings.max_request_header_bytes),
            h11_max_incomplete_event_size=server_head_limit(settings.max_request_header_bytes),
        )
    )
    server.run()


if __name__ == "__main__":
    main()
