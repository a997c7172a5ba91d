"""SDK messages → the service's SSE events and the rows that record them.

Pure and stateful per run: it remembers tool names (to label results), the model's
last context size, and which tool calls are sub-agents. The runner feeds it every SDK
message and drains what it produced."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from claude_agent_sdk import (
    AssistantMessage,
    ResultMessage,
    StreamEvent,
    SystemMessage,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    UserMessage,
)
from claude_agent_sdk.types import TaskNotificationMessage, TaskStartedMessage

from app.utils.text import storable, storable_text

PREVIEW_CHARS = 2000
Event = tuple[str, dict[str, Any]]


@dataclass
class MessageRecord:
    role: str  # user | assistant | tool_result | result
    content: list[dict[str, Any]]
    parent_tool_use_id: str | None = None
    sdk_uuid: str | None = None


@dataclass
class ToolStart:
    tool_use_id: str
    name: str
    input: dict[str, Any]
    parent_tool_use_id: str | None


@dataclass
class ToolEnd:
    tool_use_id: str
    output_preview: str
    is_error: bool


@dataclass
class Output:
    events: list[Event] = field(default_factory=list)
    messages: list[MessageRecord] = field(default_factory=list)
    tool_starts: list[ToolStart] = field(default_factory=list)
    tool_ends: list[ToolEnd] = field(default_factory=list)


def block_json(block: Any) -> dict[str, Any]:
    if isinstance(block, TextBlock):
        return {"type": "text", "text": block.text}
    if isinstance(block, ThinkingBlock):
        return {"type": "thinking", "thinking": block.thinking}
    if isinstance(block, ToolUseBlock):
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    if isinstance(block, ToolResultBlock):
        return {
            "type": "tool_result",
            "tool_use_id": block.tool_use_id,
            "content": block.content,
            "is_error": bool(block.is_error),
        }
    return {"type": type(block).__name__}


def preview(content: Any) -> str:
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        text = "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    else:
        text = "" if content is None else str(content)
    return text[:PREVIEW_CHARS]


def _with_parent(data: dict[str, Any], parent: str | None) -> dict[str, Any]:
    if parent:
        data["parent_agent_id"] = parent
    return data


class Translator:
    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        self.tool_names: dict[str, str] = {}
        self.session_id: str | None = None
        # Input-side tokens of the main agent's latest model call: its context size.
        self.context_tokens = 0
        # The main agent's text streamed since its last complete message: what the
        # client has seen of an answer that may yet be cut short.
        self._partial: list[str] = []

    @property
    def partial_text(self) -> str:
        return "".join(self._partial)

    def translate(self, message: Any) -> Output:
        """What an SDK message means for the client and the records, every string
        storable (an agent's or a tool's output may hold NUL characters)."""
        out = self._translate(message)
        out.events = [(kind, storable(data)) for kind, data in out.events]
        for record in out.messages:
            record.content = storable(record.content)
        for start in out.tool_starts:
            start.input = storable(start.input)
        for end in out.tool_ends:
            end.output_preview = storable_text(end.output_preview)
        return out

    def _translate(self, message: Any) -> Output:
        out = Output()
        if isinstance(message, StreamEvent):
            self._stream_event(message, out)
        elif isinstance(message, AssistantMessage):
            self._assistant(message, out)
        elif isinstance(message, UserMessage):
            self._user(message, out)
        elif isinstance(message, TaskStartedMessage):
            data = message.data
            out.events.append(
                (
                    "subagent_start",
                    {
                        "agent_id": data.get("tool_use_id"),
                        "agent_type": data.get("subagent_type") or data.get("task_type"),
                        "description": data.get("description"),
                        "status": "running",
                    },
                )
            )
        elif isinstance(message, TaskNotificationMessage):
            data = message.data
            out.events.append(
                (
                    "subagent_end",
                    {
                        "agent_id": data.get("tool_use_id"),
                        "agent_type": None,
                        "description": data.get("summary"),
                        "status": data.get("status", "completed"),
                    },
                )
            )
        elif isinstance(message, SystemMessage):
            self._system(message, out)
        elif isinstance(message, ResultMessage):
            self.session_id = message.session_id or self.session_id
        return out

    def _system(self, message: SystemMessage, out: Output) -> None:
        data = message.data
        if message.subtype == "init":
            self.session_id = data.get("session_id")
            out.events.append(
                (
                    "init",
                    {
                        "session_id": self.session_id,
                        "conversation_id": self.conversation_id,
                        "model": data.get("model"),
                        "tools": data.get("tools", []),
                    },
                )
            )
        elif message.subtype == "status" and data.get("status") == "requesting":
            out.events.append(
                ("progress", {"type": "generating", "message": "The model is answering"})
            )
        elif message.subtype == "api_retry":
            out.events.append(
                (
                    "progress",
                    {
                        "type": "retry",
                        "message": f"The model API failed ({data.get('error_status')}); retrying",
                        "attempt": data.get("attempt"),
                    },
                )
            )

    def _stream_event(self, message: StreamEvent, out: Output) -> None:
        event = message.event
        kind = event.get("type")
        parent = message.parent_tool_use_id
        if kind == "message_start" and parent is None:
            self._partial.clear()
            usage = event.get("message", {}).get("usage") or {}
            self.context_tokens = sum(
                int(usage.get(k) or 0)
                for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
            )
        elif kind == "content_block_delta":
            delta = event.get("delta", {})
            if delta.get("type") == "text_delta":
                if parent is None:
                    self._partial.append(delta.get("text", ""))
                data = {"text": delta.get("text", ""), "index": event.get("index", 0)}
                out.events.append(("text_delta", _with_parent(data, parent)))
            elif delta.get("type") == "thinking_delta":
                out.events.append(
                    ("thinking", _with_parent({"content": delta.get("thinking", "")}, parent))
                )

    def _assistant(self, message: AssistantMessage, out: Output) -> None:
        parent = message.parent_tool_use_id
        if parent is None:
            self._partial.clear()
        blocks = [block_json(b) for b in message.content]
        out.messages.append(MessageRecord("assistant", blocks, parent, message.uuid))
        data = {"content_blocks": blocks, "model": message.model, "message_id": message.message_id}
        out.events.append(("assistant", _with_parent(data, parent)))
        for block in message.content:
            if isinstance(block, ToolUseBlock):
                self.tool_names[block.id] = block.name
                out.tool_starts.append(ToolStart(block.id, block.name, block.input, parent))
                call = {"tool_use_id": block.id, "tool_name": block.name, "input": block.input}
                out.events.append(("tool_call", _with_parent(call, parent)))
                out.events.append(
                    (
                        "progress",
                        _with_parent({"type": "tool", "message": f"Running {block.name}"}, parent),
                    )
                )

    def _user(self, message: UserMessage, out: Output) -> None:
        if isinstance(message.content, str):
            return  # the prompt itself, or a turn the CLI injected: recorded elsewhere
        results = [b for b in message.content if isinstance(b, ToolResultBlock)]
        if not results:
            return
        parent = message.parent_tool_use_id
        out.messages.append(
            MessageRecord("tool_result", [block_json(b) for b in results], parent, message.uuid)
        )
        for block in results:
            text = preview(block.content)
            out.tool_ends.append(ToolEnd(block.tool_use_id, text, bool(block.is_error)))
            data = {
                "tool_use_id": block.tool_use_id,
                "tool_name": self.tool_names.get(block.tool_use_id),
                "is_error": bool(block.is_error),
                "content": text,
            }
            out.events.append(("tool_result", _with_parent(data, parent)))
