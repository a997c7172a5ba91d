"""The launcher the SDK starts instead of the CLI: it keeps only the variables named here
(the SDK always passes the service's whole environment on), and jails the CLI."""

from __future__ import annotations

from app.services.execute.spec import AgentBuild, bundled_cli

# Variables the CLI may keep besides those the service sets: locale, time zone, the
# working directory, and those the SDK itself sets for its CLI.
BASE_VARIABLES = (
    "PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "PWD",
    "TRACEPARENT",
    "TRACESTATE",
    "CLAUDE_CODE_ENTRYPOINT",
    "CLAUDE_AGENT_SDK_VERSION",
    "CLAUDE_AGENT_SDK_CLIENT_APP",
    "CLAUDE_AGENT_SDK_DERIVED_CLIENT_APP",
    "CLAUDE_CODE_SDK_READS_SESSION_STATE",
    "CLAUDE_CODE_ENABLE_SDK_FILE_CHECKPOINTING",
)


def apply(build: AgentBuild) -> None:
    env = build.env
    allowed = sorted({*env, *BASE_VARIABLES})
    env["CMAB_AGENT_CLI"] = str(bundled_cli())
    env["CMAB_AGENT_ENV"] = " ".join(allowed)
    if build.runtime.nice:
        env["CMAB_AGENT_NICE"] = str(build.runtime.nice)
    jail, args_file = build.runtime.jail, build.process.args_file
    if jail is not None and args_file is not None:
        env["CMAB_BWRAP"] = str(jail.bwrap)
        env["CMAB_JAIL_ARGS"] = str(args_file)
    build.options["cli_path"] = str(build.runtime.launcher)
    build.options["env"] = env
