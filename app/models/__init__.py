"""ORM classes, one module per aggregate; importing this package registers them all."""

from app.models.base import Base
from app.models.conversation import Conversation, ConversationCount, Message
from app.models.integration import McpServer, TenantSecret
from app.models.model import CatalogModel
from app.models.node import Node
from app.models.run import Run, RunEvent, SdkSessionEntry, ToolCall, UsageRecord, UsageRollup
from app.models.skill import Skill, SkillVersion
from app.models.tenant import ApiKey, Tenant
from app.models.workspace import WorkspaceFile, WorkspaceFileVersion

__all__ = [
    "ApiKey",
    "Base",
    "CatalogModel",
    "Conversation",
    "ConversationCount",
    "McpServer",
    "Message",
    "Node",
    "Run",
    "RunEvent",
    "SdkSessionEntry",
    "Skill",
    "SkillVersion",
    "Tenant",
    "TenantSecret",
    "ToolCall",
    "UsageRecord",
    "UsageRollup",
    "WorkspaceFile",
    "WorkspaceFileVersion",
]
