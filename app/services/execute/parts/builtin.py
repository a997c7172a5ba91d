"""The service's built-in tools, served in-process: `present_files`."""

from __future__ import annotations

from app.services.execute.present import SERVER, Presenter
from app.services.execute.spec import AgentBuild


def apply(build: AgentBuild) -> None:
    presenter = Presenter(build.workspace)
    build.process.presenter = presenter
    build.options.setdefault("mcp_servers", {})[SERVER] = presenter.server()
