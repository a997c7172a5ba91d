"""The CLI's environment: the provider's variables, its own home, and switches that keep
it quiet and tell a run when the CLI is done."""

from __future__ import annotations

import os

from app.services.execute.spec import AgentBuild


def apply(build: AgentBuild) -> None:
    runtime = build.runtime
    # Its own home and config directory, made for this process and deleted with it:
    # nothing an agent leaves there (a link, say, which the SDK would follow on the host
    # when it next resumes the session) outlives the process. Transcripts live in the
    # session store.
    home = build.process.home
    home.mkdir(mode=0o700)
    build.env.update(
        {
            **runtime.provider.env,
            "HOME": str(home),
            "CLAUDE_CONFIG_DIR": str(home),
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "CLAUDE_CODE_DISABLE_AUTO_MEMORY": "1",
            "CLAUDE_CODE_MAX_RETRIES": str(runtime.max_retries),
            # session_state_changed in the stream: "idle" is how a run knows the CLI owes
            # it nothing more (no background task, no notification turn).
            "CLAUDE_CODE_EMIT_SESSION_STATE_EVENTS": "1",
            "DISABLE_AUTOUPDATER": "1",
            "TMPDIR": os.environ.get("TMPDIR", "/tmp"),  # noqa: S108 (the CLI needs one)
        }
    )
    if not build.jailed and "Bash" in build.spec.tools:
        # Unjailed, the CLI holds the provider's credentials: Bash must not see them.
        # (Jailed, it holds none for the Anthropic wire; and this scrubbing would make its
        # Bash sandbox mount a /proc, which the jail does not allow.) Both need bwrap on
        # PATH, and refuse to run without it.
        build.env["CLAUDE_CODE_SUBPROCESS_ENV_SCRUB"] = "1"
        if runtime.bwrap is not None:
            path = os.environ.get("PATH", "/usr/bin:/bin")
            build.env["PATH"] = f"{runtime.bwrap.parent}:{path}"
