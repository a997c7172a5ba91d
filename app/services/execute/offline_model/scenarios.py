"""What the scripted model says: a pure function from a Messages API request to a reply.

The reply depends only on the request, so a run is reproducible: the scenario named in
the user's latest message (`scenario:NAME` or `scenario:NAME:ARG`) and whether that
message has been answered with tool results yet.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass, field
from typing import Any

SCENARIO_MARKER = re.compile(r"scenario:([a-z0-9-]+)(?::([A-Za-z0-9_.-]+))?")
WORKDIR = re.compile(r"Primary working directory: (\S+)")
OFFLINE_LABEL = "[offline model]"
# Outside any workspace: the `escape` scenario tries to write here.
ESCAPE_PATH = "/tmp/cmab-escaped.md"  # noqa: S108

SCENARIOS: dict[str, str] = {
    "echo": "the default: a short streamed answer repeating the request",
    "text": "a long answer streamed in many chunks (scenario:text:N for N chunks)",
    "tool": "one Write tool call, then a closing answer",
    "parallel": "two Write tool calls in one message (run in parallel), then an answer",
    "subagent": "an Agent (Task) call whose sub-agent answers on its own; then an answer "
    "(scenario:subagent:N, N calls at once; scenario:subagent:haiku, on that model)",
    "skill": "a Skill tool call (scenario:skill:NAME), then an answer",
    "slow": "streamed text with a pause between chunks (scenario:slow:MS, default 200)",
    "paced": "N text chunks, MS apart (scenario:paced:NxMS, default 300x20: 50 a second), "
    "each the time it was sent",
    "cache": "a plain answer whose usage includes cache writes (5m and 1h) and reads",
    "error": "the API fails with the status given (scenario:error:429 | 500 | 529)",
    "drop": "the stream starts, then the connection drops mid-answer",
    "escape": "a Write outside the workspace (the permission policy must refuse it)",
    "bash": "a Bash call that prints the agent's environment (`env`)",
    "hostile": "the hostile model: calls the tools listed after the marker as JSON "
    '(`scenario:hostile [["Bash", {"command": "id"}], ...]`), one at a time in order, '
    "then reports each result",
}
# A text chunk holding this is sent with it replaced by the time it was sent (epoch
# seconds): the `paced` scenario's, for benches that measure lag.
SEND_TIME = "@sent@"
# How much of each tool result the hostile model's report repeats.
REPORT_CHARS = 4000


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 100
    output_tokens: int = 20
    cache_creation_5m: int = 0
    cache_creation_1h: int = 0
    cache_read: int = 0

    def start(self) -> dict[str, Any]:
        """The usage of `message_start`: output counted as 1 so far, as the real API does."""
        return {**self.final(), "output_tokens": 1}

    def final(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_creation_5m + self.cache_creation_1h,
            "cache_read_input_tokens": self.cache_read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache_creation_5m,
                "ephemeral_1h_input_tokens": self.cache_creation_1h,
            },
        }


@dataclass(frozen=True)
class Text:
    chunks: tuple[str, ...]


@dataclass(frozen=True)
class ToolUse:
    id: str
    name: str
    input: dict[str, Any]


Block = Text | ToolUse


@dataclass(frozen=True)
class Reply:
    blocks: tuple[Block, ...] = ()
    usage: Usage = field(default_factory=Usage)
    chunk_delay: float = 0.0
    # An HTTP status to fail with instead of answering, or "drop" to cut the stream.
    failure: int | str | None = None

    @property
    def stop_reason(self) -> str:
        return "tool_use" if any(isinstance(b, ToolUse) for b in self.blocks) else "end_turn"

    def content(self) -> list[dict[str, Any]]:
        """The blocks as a complete (non-streamed) message's content."""
        return [
            {"type": "text", "text": "".join(b.chunks)}
            if isinstance(b, Text)
            else {"type": "tool_use", "id": b.id, "name": b.name, "input": b.input}
            for b in self.blocks
        ]


def words(text: str) -> tuple[str, ...]:
    """Stream a text a word at a time, spaces kept, so the chunks join back to it."""
    parts = re.findall(r"\S+\s*|\s+", text)
    return tuple(parts) or ("",)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(
        block.get("text", "")
        for block in content
        if isinstance(block, dict) and block.get("type") == "text"
    )


def _tool_results(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if not isinstance(content, list):
        return []
    return [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]


def _is_tool_results(message: dict[str, Any]) -> bool:
    """A user message that answers tool calls (text beside the results, such as the
    instructions the Skill tool loads, belongs to them: it is not a new prompt)."""
    return bool(_tool_results(message))


def _latest_prompt(messages: list[dict[str, Any]]) -> tuple[str, bool]:
    """The latest user text, and whether tool results have come in since it."""
    answered = False
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        if _is_tool_results(message):
            answered = True
            continue
        return _text_of(message.get("content")), answered
    return "", answered


def _user_words(prompt: str) -> str:
    """The user's own words: the prompt without the CLI's <system-reminder> blocks."""
    stripped = re.sub(r"<system-reminder>.*?</system-reminder>", "", prompt, flags=re.S)
    return " ".join(stripped.split())


def _results_since_prompt(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tool results that came in since the latest user text, oldest first."""
    results: list[dict[str, Any]] = []
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        if not _is_tool_results(message):
            break
        results[:0] = _tool_results(message)
    return results


def _hostile_calls(prompt: str, after: int) -> list[tuple[str, dict[str, Any]]]:
    start = prompt.find("[", after)
    if start < 0:
        return []
    try:
        calls, _ = json.JSONDecoder().raw_decode(prompt[start:])
    except ValueError:
        return []
    return [
        (str(c[0]), c[1] if len(c) > 1 and isinstance(c[1], dict) else {})
        for c in calls
        if isinstance(c, list) and c
    ]


def _result_text(result: dict[str, Any]) -> str:
    content = result.get("content")
    if isinstance(content, list):
        content = "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return re.sub(r"\s*<system-reminder>.*?</system-reminder>\s*", "\n", str(content), flags=re.S)[
        :REPORT_CHARS
    ].strip()


def _hostile(request: dict[str, Any], prompt: str, after: int) -> Reply:
    """Call the listed tools one at a time, whatever they are; then say what each gave."""
    calls = _hostile_calls(prompt, after)
    results = _results_since_prompt(request.get("messages") or [])
    if len(results) < len(calls):
        name, tool_input = calls[len(results)]
        # Unique across agents: a sub-agent's calls come in requests of the same length.
        tool_id = f"toolu_hostile_{zlib.crc32(prompt.encode()):08x}_{len(results)}"
        return Reply((ToolUse(tool_id, name, tool_input),))
    lines = [f"{OFFLINE_LABEL} Hostile report:"]
    for n, ((name, _), result) in enumerate(zip(calls, results, strict=False), 1):
        status = "ERROR" if result.get("is_error") else "OK"
        lines.append(f"[{n}] {name} {status}: {_result_text(result)}")
    return Reply((Text(("\n".join(lines),)),))


def _tool_id(request: dict[str, Any], n: int) -> str:
    # Unique per request position, stable for the same request.
    return f"toolu_offline_{len(request.get('messages', []))}_{n}"


def plan_reply(request: dict[str, Any]) -> Reply:
    messages = request.get("messages") or []
    prompt, answered = _latest_prompt(messages)
    marker = SCENARIO_MARKER.search(prompt)
    name, arg = (marker.group(1), marker.group(2)) if marker else ("echo", None)
    workdir_match = WORKDIR.search(prompt) or WORKDIR.search(str(request.get("system", "")))
    workdir = workdir_match.group(1) if workdir_match else "."
    said = _user_words(prompt)

    if name == "hostile" and marker is not None:
        return _hostile(request, prompt, marker.end())
    if "<task-notification>" in prompt:
        return Reply((Text(words(f"{OFFLINE_LABEL} The background task has finished.")),))
    if name == "subagent-reply":
        return Reply((Text(words(f"{OFFLINE_LABEL} Sub-agent report: the task is done.")),))
    if answered:
        return Reply((Text(words(f"{OFFLINE_LABEL} Done: the tools have run.")),))

    if name == "text":
        count = int(arg) if arg and arg.isdigit() else 40
        return Reply(
            (Text(tuple(f"chunk {i} " for i in range(count))),), Usage(output_tokens=count)
        )
    if name == "tool":
        return Reply((_write(request, 0, workdir, "notes.md", "Notes from the offline model.\n"),))
    if name == "parallel":
        return Reply(
            (
                _write(request, 0, workdir, "alpha.md", "Alpha\n"),
                _write(request, 1, workdir, "beta.md", "Beta\n"),
            )
        )
    if name == "subagent":
        agent_input = {
            "description": "Research the topic",
            "prompt": "scenario:subagent-reply Research the topic and report back.",
            "subagent_type": "general-purpose",
        }
        count = int(arg) if arg and arg.isdigit() else 1
        if arg and not arg.isdigit():
            agent_input["model"] = arg
        return Reply(
            tuple(ToolUse(_tool_id(request, i), "Agent", agent_input) for i in range(count))
        )
    if name == "skill":
        return Reply((ToolUse(_tool_id(request, 0), "Skill", {"skill": arg or "example"}),))
    if name == "paced":
        number, _, gap = (arg or "300x20").partition("x")
        count = int(number) if number.isdigit() else 300
        chunks = (f"{SEND_TIME} ",) * count
        delay = int(gap) / 1000 if gap.isdigit() else 0.02
        return Reply((Text(chunks),), Usage(output_tokens=len(chunks)), chunk_delay=delay)
    if name == "slow":
        delay = int(arg) / 1000 if arg and arg.isdigit() else 0.2
        return Reply(
            (Text(words(f"{OFFLINE_LABEL} Slowly, one word at a time.")),), chunk_delay=delay
        )
    if name == "cache":
        usage = Usage(1000, 500, cache_creation_5m=2000, cache_creation_1h=1000, cache_read=3000)
        return Reply((Text(words(f"{OFFLINE_LABEL} Answered from cache.")),), usage)
    if name == "error":
        return Reply(failure=int(arg) if arg and arg.isdigit() else 500)
    if name == "escape":
        return Reply(
            (ToolUse(_tool_id(request, 0), "Write", {"file_path": ESCAPE_PATH, "content": "x"}),)
        )
    if name == "bash":
        return Reply(
            (ToolUse(_tool_id(request, 0), "Bash", {"command": "env", "description": "Print env"}),)
        )
    if name == "drop":
        return Reply(
            (Text(words(f"{OFFLINE_LABEL} This answer will be cut off here")),), failure="drop"
        )
    return Reply(
        (Text(words(f"{OFFLINE_LABEL} You said: {said}" if said else f"{OFFLINE_LABEL} Hello.")),)
    )


def _write(request: dict[str, Any], n: int, workdir: str, name: str, content: str) -> ToolUse:
    return ToolUse(
        _tool_id(request, n),
        "Write",
        {"file_path": f"{workdir.rstrip('/')}/{name}", "content": content},
    )
