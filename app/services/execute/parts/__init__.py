"""The parts that turn a run's spec into the SDK's options, applied in this order (the
launcher last: it fixes which variables the CLI keeps). A new per-run option is a new
module here and one line in PARTS."""

from __future__ import annotations

from collections.abc import Callable

from app.services.execute.parts import (
    builtin,
    environment,
    launcher,
    mcp,
    model,
    network,
    prompt,
    session,
    skills,
    tools,
    workspace,
)
from app.services.execute.spec import AgentBuild

Part = Callable[[AgentBuild], None]

PARTS: tuple[Part, ...] = (
    prompt.apply,
    model.apply,
    workspace.apply,
    builtin.apply,
    skills.apply,
    mcp.apply,
    tools.apply,
    session.apply,
    environment.apply,
    network.apply,
    launcher.apply,
)
