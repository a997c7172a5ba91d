"""`make clients`: the Python and TypeScript clients, generated from the OpenAPI document
of a running service (OPENAPI_URL, or one started here on its embedded defaults).

What it writes (all of it generated, none of it committed):
  clients/openapi.json          the document the clients were made from
  clients/python/               the Python client (openapi-python-client): package cmab_client
  clients/typescript/schema.d.ts  the TypeScript types (openapi-typescript), for openapi-fetch
The TypeScript usage example (clients/typescript/usage.ts) is then type-checked against
the new types, so a change to the document that breaks it shows here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from app.utils.ports import free_port

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CLIENTS = PROJECT_ROOT / "clients"
DOCUMENT = CLIENTS / "openapi.json"
PYTHON_OUTPUT = CLIENTS / "python"
PYTHON_CONFIG = CLIENTS / "openapi-python-client.yaml"
PYTHON_PACKAGE = "cmab_client"
TYPESCRIPT = CLIENTS / "typescript"
# What a copy of the TypeScript project needs (the rest is made or installed).
TYPESCRIPT_SOURCES = ("package.json", "package-lock.json", "tsconfig.json", "usage.ts")
SERVICE_START_TIMEOUT = 120.0  # a first start makes the embedded PostgreSQL


class GenerationError(RuntimeError):
    """A step failed; the message says which, with the tool's output."""


def document_url(url: str) -> str:
    """OPENAPI_URL may name the document or just the service (`http://host:8000`)."""
    return url.rstrip("/") + "/openapi.json" if urlsplit(url).path in ("", "/") else url


def fetch_document(url: str, path: Path) -> Path:
    """The service's OpenAPI document at `url`, written to `path`."""
    response = httpx.get(url, timeout=30)
    if response.status_code != 200:
        raise GenerationError(f"GET {url} answered {response.status_code}: {response.text[:500]}")
    document = response.json()
    if not isinstance(document, dict) or "openapi" not in document:
        raise GenerationError(f"{url} is not an OpenAPI document")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


@contextmanager
def running_service() -> Iterator[str]:
    """`python -m app` on a free loopback port, with the settings `make run` would use
    (the environment and .env; the embedded PostgreSQL when no DATABASE_URL), until the
    block ends; yields its base URL. It takes no runs and touches no other node's: it
    only serves the document, next to a `make run` on the same data if there is one."""
    port = free_port()
    env = {
        **os.environ,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "NODE_ROLES": "api",
        "NODE_ID": f"clients-{os.getpid()}",
        "RECOVER_RUNS_ON_START": "false",
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
    }
    service = subprocess.Popen([sys.executable, "-m", "app"], cwd=PROJECT_ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVICE_START_TIMEOUT
        while True:
            if service.poll() is not None:
                raise GenerationError(f"the service exited ({service.returncode}) before serving")
            if time.monotonic() > deadline:
                raise GenerationError("the service did not start in time")
            try:
                if httpx.get(f"{base}/health/live", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield base
    finally:
        if service.poll() is None:
            service.send_signal(signal.SIGTERM)
            try:
                service.wait(timeout=60)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait()


def _run(command: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a generator's command; its output, or a GenerationError that carries it."""
    done = subprocess.run(  # noqa: S603 (our own tools, fixed arguments)
        command, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=600
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise GenerationError(f"{' '.join(command)} failed ({done.returncode}):\n{output}")
    return output


# What openapi-python-client cannot do with a right document: it says so, and makes the
# rest of the client. Any other warning is the document's fault (the tests fail on it).
GENERATOR_LIMITATIONS = (
    # A skill may be sent as a zip; this client sends it as JSON or multipart instead.
    "Unsupported content type application/zip",
)


@dataclass(frozen=True)
class PythonClient:
    project: Path  # the generated project (pyproject.toml, README.md, the package)
    package: str  # what to import
    warnings: list[str]  # the generator's warnings, one block each

    @property
    def document_defects(self) -> list[str]:
        """The warnings that are not the generator's known limitations."""
        return [w for w in self.warnings if not any(k in w for k in GENERATOR_LIMITATIONS)]


def unique_titles(document: dict[str, Any]) -> dict[str, Any]:
    """The document with each component schema whose `title` another one shares titled
    by its own name instead. openapi-python-client names models by title and drops all
    but one of a title's schemas (with what refers to them), and FastAPI titles both
    halves of a model that reads and writes differently (`TenantSettings-Input`,
    `-Output`) alike: openapi-python-client issue #1340."""
    schemas = document.get("components", {}).get("schemas", {})
    titles = Counter(schema["title"] for schema in schemas.values() if "title" in schema)
    fixed = {
        name: {**schema, "title": name} if titles[schema.get("title")] > 1 else schema
        for name, schema in schemas.items()
    }
    return {**document, "components": {**document["components"], "schemas": fixed}}


def generate_python(document: Path, output: Path = PYTHON_OUTPUT) -> PythonClient:
    """The Python client of `document`, as a uv project at `output` (replaced)."""
    venv_bin = Path(sys.executable).parent
    output.parent.mkdir(parents=True, exist_ok=True)
    # Its post-hooks (ruff check --fix, ruff format) run ruff from PATH: this venv's.
    env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    with tempfile.TemporaryDirectory() as scratch:
        titled = Path(scratch) / "openapi.json"
        titled.write_text(json.dumps(unique_titles(json.loads(document.read_text()))))
        output_text = _run(
            [
                str(venv_bin / "openapi-python-client"),
                "generate",
                "--path",
                str(titled),
                "--output-path",
                str(output),
                "--config",
                str(PYTHON_CONFIG),
                "--meta",
                "uv",
                "--overwrite",
            ],
            cwd=output.parent,
            env=env,
        )
    return PythonClient(output, PYTHON_PACKAGE, _generator_warnings(output_text))


def _generator_warnings(output: str) -> list[str]:
    """openapi-python-client's warnings, one string each: after its "Warning(s)
    encountered" line, blank-line separated blocks, each warning a heading ("WARNING
    parsing GET /path ...", "Unable to ...") and its message, then the schema it could not
    use (JSON, left out here)."""
    _, found, rest = output.partition("Warning(s) encountered while generating.")
    warnings: list[str] = []
    for block in (b.strip() for b in rest.partition("\n")[2].split("\n\n")):
        if not block or block.startswith(("{", "[", "If you believe")):
            continue
        if block.startswith(("Skipping Integration", "ruff is not in PATH")):
            continue  # its formatting post-hook, not the document
        if (
            block.startswith(("WARNING", "Unable to parse schema", "Unable to process"))
            or not warnings
        ):
            warnings.append(block)
        else:
            warnings[-1] += "\n" + block
    return warnings if found else []


def npm() -> str:
    found = shutil.which("npm")
    if found is None:
        raise GenerationError("npm is not on PATH: the TypeScript client needs Node.js 18+ and npm")
    return found


def copy_typescript_project(target: Path) -> Path:
    """The TypeScript project's own files (not its generated or installed ones) copied to
    `target`, to generate and type-check there without touching clients/typescript."""
    target.mkdir(parents=True, exist_ok=True)
    for name in TYPESCRIPT_SOURCES:
        shutil.copy2(TYPESCRIPT / name, target / name)
    return target


def install_typescript(project: Path = TYPESCRIPT) -> None:
    """The project's pinned packages (package-lock.json) into its node_modules."""
    # None of them needs an install script: none is run.
    _run(
        [npm(), "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline"],
        cwd=project,
    )


def generate_typescript(document: Path, project: Path = TYPESCRIPT) -> Path:
    """`schema.d.ts` (the document's paths and schemas as types) in `project`."""
    schema = project / "schema.d.ts"
    tool = project / "node_modules" / ".bin" / "openapi-typescript"
    # Off: a property with a default would be required in request bodies too.
    _run(
        [str(tool), str(document), "--output", str(schema), "--default-non-nullable", "false"],
        cwd=project,
    )
    return schema


def typecheck_typescript(project: Path = TYPESCRIPT) -> subprocess.CompletedProcess[str]:
    """`tsc --noEmit` over the project (usage.ts against schema.d.ts); not raised on."""
    return subprocess.run(  # noqa: S603 (the project's own compiler)
        [str(project / "node_modules" / ".bin" / "tsc"), "--noEmit", "-p", str(project)],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def generate_all(document: Path) -> PythonClient:
    """Both clients from `document`, and the TypeScript example checked against it."""
    python = generate_python(document)
    print(f"Python client: {python.project.relative_to(PROJECT_ROOT)} (import {python.package})")
    for warning in python.document_defects:
        print("  The document is wrong here (openapi-python-client's warning):")
        print("    " + warning.replace("\n", "\n    "))
    install_typescript()
    schema = generate_typescript(document)
    print(f"TypeScript types: {schema.relative_to(PROJECT_ROOT)}")
    check = typecheck_typescript()
    if check.returncode != 0:
        raise GenerationError(f"usage.ts does not type-check:\n{check.stdout}{check.stderr}")
    print("TypeScript example: usage.ts type-checks")
    return python


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url",
        default=os.environ.get("OPENAPI_URL") or None,
        help="a running service's document (default: $OPENAPI_URL; else a service is started)",
    )
    args = parser.parse_args(argv)
    try:
        if args.url:
            url = document_url(args.url)
            fetch_document(url, DOCUMENT)
        else:
            with running_service() as base:
                url = f"{base}/openapi.json"
                fetch_document(url, DOCUMENT)
        print(f"OpenAPI document: {url} -> {DOCUMENT.relative_to(PROJECT_ROOT)}")
        generate_all(DOCUMENT)
    except GenerationError as exc:
        print(f"make clients: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
