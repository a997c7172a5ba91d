"""The scripted model server: answers the Claude Code CLI the way Claude would, over the
Anthropic Messages API and the Bedrock runtime API, playing deterministic scenarios.

It is the model behind `MODEL_PROVIDER=offline` and behind every test that runs an
agent. A scenario is picked by a marker in the user's message, `scenario:NAME`
(see `scenarios.SCENARIOS`); with none it answers as a labelled offline model.
"""

from app.services.execute.offline_model.scenarios import SCENARIOS, Reply, plan_reply
from app.services.execute.offline_model.server import OfflineModelServer, create_app

__all__ = ["SCENARIOS", "OfflineModelServer", "Reply", "create_app", "plan_reply"]
