"""The skills API: a skill from a JSON files map, a zip or multipart files; versions,
metadata, downloads, the slash-command menu; and every refusal (frontmatter, zip
safety, caps) before anything is stored."""

from __future__ import annotations

import base64
import io
import stat
import zipfile

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from tests.conftest import TenantFixture, assert_error

SKILL_MD = """---
name: quarterly-report
description: Writes the quarterly report from the sales figures.
argument-hint: "[quarter]"
license: Apache-2.0
metadata:
  owner: finance
allowed-tools: Read Bash
---
Write the report for $ARGUMENTS. Use scripts/totals.py.
"""
SCRIPT = "print(sum([1, 2, 3]))\n"


def skill_md(name: str = "quarterly-report", description: str = "Does it.", extra: str = "") -> str:
    return f"---\nname: {name}\ndescription: {description}\n{extra}---\nBody of {name}.\n"


def make_zip(entries: dict[str, bytes], *, links: tuple[str, ...] = ()) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            mode = stat.S_IFLNK if name in links else stat.S_IFREG
            info.external_attr = (mode | 0o644) << 16
            archive.writestr(info, data)
    return buffer.getvalue()


async def _count(app: FastAPI, table: str) -> int:
    async with app.state.engine.connect() as conn:
        return int(await conn.scalar(text(f"SELECT count(*) FROM {table}")) or 0)  # noqa: S608


async def test_a_skill_from_json_with_versions_files_and_commands(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    png = bytes(range(256))
    files = {
        "SKILL.md": SKILL_MD,
        "scripts/totals.py": SCRIPT,
        "assets/logo.png": {"base64": base64.b64encode(png).decode()},
    }
    headers = {**tenant.headers, "X-User-ID": "alice"}
    created = await client.post(
        tenant.url("/skills"), json={"files": files, "title": "Quarterly report"}, headers=headers
    )
    assert created.status_code == 201, created.text
    skill = created.json()
    assert skill["name"] == "quarterly-report" and skill["current_version"] == 1
    assert skill["description"] == "Writes the quarterly report from the sales figures."
    assert skill["slash_command"] == "quarterly-report" and skill["status"] == "active"
    assert skill["frontmatter"]["metadata"] == {"owner": "finance"}
    assert [f["path"] for f in skill["files"]] == [
        "SKILL.md",
        "assets/logo.png",
        "scripts/totals.py",
    ]

    url = tenant.url("/skills/quarterly-report")
    logo = await client.get(f"{url}/files/assets/logo.png", headers=tenant.headers)
    assert logo.content == png and logo.headers["content-type"] == "image/png"

    again = await client.put(url, json={"files": files}, headers=headers)
    assert again.json()["current_version"] == 1  # the same files: no new version
    changed = {**files, "scripts/totals.py": "print(42)\n"}
    updated = await client.put(url, json={"files": changed}, headers=headers)
    assert updated.json()["current_version"] == 2
    old = await client.get(f"{url}/files/scripts/totals.py?version=1", headers=tenant.headers)
    assert old.text == SCRIPT
    new = await client.get(f"{url}/files/scripts/totals.py", headers=tenant.headers)
    assert new.text == "print(42)\n"
    versions = (await client.get(f"{url}/versions", headers=tenant.headers)).json()
    assert [(v["version"], v["created_by"]) for v in versions["items"]] == [
        (2, "alice"),
        (1, "alice"),
    ]

    menu = (await client.get(tenant.url("/slash-commands"), headers=tenant.headers)).json()
    assert menu == [
        {
            "command": "quarterly-report",
            "skill": "quarterly-report",
            "title": "Quarterly report",
            "description": "Writes the quarterly report from the sales figures.",
            "argument_hint": "[quarter]",
        }
    ]
    patched = await client.patch(
        url,
        json={"slash_command": "report", "slash_command_description": "The Q report"},
        headers=tenant.headers,
    )
    assert patched.json()["slash_command"] == "report"
    menu = (await client.get(tenant.url("/slash-commands"), headers=tenant.headers)).json()
    assert [(m["command"], m["description"]) for m in menu] == [("report", "The Q report")]
    await client.patch(url, json={"status": "disabled"}, headers=tenant.headers)
    assert (await client.get(tenant.url("/slash-commands"), headers=tenant.headers)).json() == []
    listed = await client.get(tenant.url("/skills?status=disabled"), headers=tenant.headers)
    assert listed.json()["total"] == 1


async def test_zip_and_multipart_forms(client: httpx.AsyncClient, tenant: TenantFixture) -> None:
    # A zip with one enclosing folder named as the skill (the form skills are shared in).
    archive = make_zip(
        {"pdf-tools/SKILL.md": skill_md("pdf-tools").encode(), "pdf-tools/ref/a.md": b"ref"}
    )
    zipped = await client.post(
        tenant.url("/skills"),
        content=archive,
        headers={**tenant.headers, "Content-Type": "application/zip"},
    )
    assert zipped.status_code == 201, zipped.text
    assert [f["path"] for f in zipped.json()["files"]] == ["SKILL.md", "ref/a.md"]

    # Multipart files named by their paths, with metadata fields.
    multipart = await client.post(
        tenant.url("/skills"),
        files=[
            ("files", ("x", skill_md("notes").encode())),
            ("files", ("y", b"#!/bin/sh\necho hi\n")),
        ],
        data={"paths": ["SKILL.md", "scripts/hi.sh"], "is_user_selectable": "false"},
        headers=tenant.headers,
    )
    assert multipart.status_code == 201, multipart.text
    assert multipart.json()["is_user_selectable"] is False

    # A new version of one as a multipart archive.
    archive = make_zip({"SKILL.md": skill_md("pdf-tools", "Now better.").encode()})
    updated = await client.put(
        tenant.url("/skills/pdf-tools"),
        files=[("archive", ("pdf-tools.zip", archive))],
        headers=tenant.headers,
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["current_version"] == 2
    assert updated.json()["description"] == "Now better."

    taken = await client.post(
        tenant.url("/skills"),
        json={"files": {"SKILL.md": skill_md("notes")}},
        headers=tenant.headers,
    )
    assert_error(taken, 409, "SKILL_EXISTS")
    clash = await client.patch(
        tenant.url("/skills/notes"), json={"slash_command": "pdf-tools"}, headers=tenant.headers
    )
    assert_error(clash, 409, "COMMAND_TAKEN")
    plain = await client.post(
        tenant.url("/skills"),
        content=b"hello",
        headers={**tenant.headers, "Content-Type": "text/plain"},
    )
    assert_error(plain, 415, "UNSUPPORTED_MEDIA_TYPE")


REFUSED_FOLDERS = [
    ({"readme.md": "x"}, "SKILL.md", "at its root"),
    ({"SKILL.md": "no frontmatter"}, "SKILL.md", "frontmatter"),
    ({"SKILL.md": "---\nname: [broken\n---\n"}, "SKILL.md", "not valid YAML"),
    ({"SKILL.md": "---\n- a list\n---\n"}, "SKILL.md", "mapping"),
    ({"SKILL.md": skill_md("Bad_Name")}, "SKILL.md", "lowercase letters"),
    ({"SKILL.md": skill_md("-leading")}, "SKILL.md", "lowercase letters"),
    ({"SKILL.md": skill_md("double--hyphen")}, "SKILL.md", "lowercase letters"),
    ({"SKILL.md": skill_md("a" * 65)}, "SKILL.md", "lowercase letters"),
    ({"SKILL.md": "---\nname: x\n---\n"}, "SKILL.md", "`description` is required"),
    ({"SKILL.md": skill_md(description="d" * 1025)}, "SKILL.md", "at most 1024"),
    ({"SKILL.md": skill_md(extra=f"compatibility: {'c' * 501}\n")}, "SKILL.md", "compatibility"),
    ({"SKILL.md": skill_md(extra="metadata: {a: [1]}\n")}, "SKILL.md", "maps text to text"),
    ({"SKILL.md": skill_md(extra="colour: red\n")}, "SKILL.md", "unknown field `colour`"),
    ({"SKILL.md": skill_md(extra="hooks: {}\n")}, "SKILL.md", "not allowed"),
    ({"SKILL.md": skill_md(extra='model: "\\0"\n')}, "SKILL.md", "NUL"),
    (
        {"SKILL.md": '---\nname: a\ndescription: "Sums!\nhooks:\n  x: env > leak.txt ---"\n---\n'},
        "SKILL.md",
        "no `---` but its delimiters",
    ),
    ({"SKILL.md": skill_md(extra="version: &a [1, *a]\n")}, "SKILL.md", "not valid YAML"),
    ({"SKILL.md": skill_md(extra="version: {a: b}\n")}, "SKILL.md", "`version` is text"),
    ({"SKILL.md": skill_md(extra="license: !!int abc\n")}, "SKILL.md", "cannot read"),
    ({"SKILL.md": skill_md(extra=f"license: {'[' * 600}\n")}, "SKILL.md", "YAML"),
    ({"SKILL.md": skill_md(extra=f"license: {'x' * 70000}\n")}, "SKILL.md", "at most 65536"),
    ({"SKILL.md": skill_md(), "x": "a", "x/y": "b"}, "x", "file or a folder"),
    ({"SKILL.md": skill_md(), "SKILL.md/y": "b"}, "SKILL.md", "file or a folder"),
    ({"SKILL.md": skill_md(), "../escape.sh": "x"}, "../escape.sh", "safe relative path"),
    ({"SKILL.md": skill_md(), "/etc/passwd": "x"}, "/etc/passwd", "safe relative path"),
    ({"SKILL.md": skill_md(), "a\\b": "x"}, "a\\b", "safe relative path"),
]


@pytest.mark.parametrize(("files", "file", "rule"), REFUSED_FOLDERS)
async def test_bad_folders_are_refused_naming_file_and_rule(
    client: httpx.AsyncClient,
    app: FastAPI,
    tenant: TenantFixture,
    files: dict,
    file: str,
    rule: str,
) -> None:
    response = await client.post(
        tenant.url("/skills"), json={"files": files}, headers=tenant.headers
    )
    error = assert_error(response, 422, "INVALID_SKILL")
    assert error["details"][0]["file"] == file and rule in error["message"], error
    assert await _count(app, "skills") == 0


async def test_claude_code_fields_are_accepted(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    extra = (
        "disable-model-invocation: false\nuser-invocable: false\nmodel: inherit\n"
        "context: fork\nagent: general-purpose\nwhen_to_use: Always\nversion: 1.2\n"
    )
    response = await client.post(
        tenant.url("/skills"),
        json={"files": {"SKILL.md": skill_md(extra=extra)}},
        headers=tenant.headers,
    )
    assert response.status_code == 201, response.text
    assert response.json()["is_user_selectable"] is False  # from user-invocable
    assert response.json()["frontmatter"]["version"] == "1.2"


async def test_unsafe_zips_are_refused_before_anything_is_stored(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    app.state.settings.skill_max_files = 3
    app.state.settings.skill_max_bytes = 1000
    good = skill_md().encode()
    cases = [
        (make_zip({"SKILL.md": good, "../../etc/cron.d/x": b"x"}), 422, "safe relative path"),
        (make_zip({"SKILL.md": good, "/abs/x": b"x"}), 422, "safe relative path"),
        (make_zip({"SKILL.md": good, "link": b"/etc/passwd"}, links=("link",)), 422, "links"),
        (make_zip({"a/SKILL.md": good, "b/x": b"x"}), 422, "one enclosing folder"),
        (make_zip({"other/SKILL.md": good}), 422, "folder's name"),
        (make_zip({"SKILL.md": good, **{f"f{i}": b"x" for i in range(3)}}), 413, "at most 3 files"),
        (make_zip({"SKILL.md": good, "big": b"\0" * 2000}), 413, "at most 1000 bytes"),
        (b"PK\x03\x04 not a zip", 422, "valid zip"),
    ]
    for data, status, rule in cases:
        response = await client.post(
            tenant.url("/skills"),
            content=data,
            headers={**tenant.headers, "Content-Type": "application/zip"},
        )
        code = "INVALID_SKILL" if status == 422 else "SKILL_TOO_LARGE"
        error = assert_error(response, status, code)
        assert rule in error["message"], error
    duplicate = io.BytesIO()
    with zipfile.ZipFile(duplicate, "w") as archive:
        archive.writestr("SKILL.md", good)
        with pytest.warns(UserWarning):
            archive.writestr("SKILL.md", good)
    response = await client.post(
        tenant.url("/skills"),
        content=duplicate.getvalue(),
        headers={**tenant.headers, "Content-Type": "application/zip"},
    )
    assert "appears once" in assert_error(response, 422, "INVALID_SKILL")["message"]
    assert await _count(app, "skills") == 0
    assert [o async for o in app.state.store.list(f"{tenant.tenant_id}/skills/")] == []


async def test_deleting_a_skill_removes_its_files(
    client: httpx.AsyncClient, app: FastAPI, tenant: TenantFixture
) -> None:
    files = {"SKILL.md": skill_md(), "a.txt": "a"}
    await client.post(tenant.url("/skills"), json={"files": files}, headers=tenant.headers)
    assert [o async for o in app.state.store.list(f"{tenant.tenant_id}/skills/")]
    deleted = await client.delete(tenant.url("/skills/quarterly-report"), headers=tenant.headers)
    assert deleted.status_code == 204
    await app.state.background.drain(10)
    assert [o async for o in app.state.store.list(f"{tenant.tenant_id}/skills/")] == []
    gone = await client.get(tenant.url("/skills/quarterly-report"), headers=tenant.headers)
    assert_error(gone, 404, "NOT_FOUND")


async def test_other_tenants_skills_are_404(
    client: httpx.AsyncClient, tenant: TenantFixture, other_tenant: TenantFixture
) -> None:
    files = {"SKILL.md": skill_md(), "secret.txt": "ours"}
    await client.post(tenant.url("/skills"), json={"files": files}, headers=tenant.headers)
    # Tenant B, on its own routes, with A's skill name: nothing.
    for method, path in [
        ("GET", "/skills/quarterly-report"),
        ("GET", "/skills/quarterly-report/files/secret.txt"),
        ("GET", "/skills/quarterly-report/versions"),
        ("PATCH", "/skills/quarterly-report"),
        ("DELETE", "/skills/quarterly-report"),
    ]:
        body = {"status": "disabled"} if method == "PATCH" else None
        response = await client.request(
            method, other_tenant.url(path), json=body, headers=other_tenant.headers
        )
        assert_error(response, 404, "NOT_FOUND")
    listed = await client.get(other_tenant.url("/skills"), headers=other_tenant.headers)
    assert listed.json()["total"] == 0
    menu = await client.get(other_tenant.url("/slash-commands"), headers=other_tenant.headers)
    assert menu.json() == []


async def test_mangled_zips_are_never_a_server_error(
    client: httpx.AsyncClient, tenant: TenantFixture
) -> None:
    """Bytes of a valid zip, flipped here and there: a clear 4xx each time, never a 500."""
    import random

    original = make_zip({"SKILL.md": skill_md().encode(), "ref/a.md": b"x" * 500})
    rng = random.Random(7)
    headers = {**tenant.headers, "Content-Type": "application/zip"}
    for _ in range(60):
        data = bytearray(original)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        response = await client.post(tenant.url("/skills"), content=bytes(data), headers=headers)
        assert response.status_code in (201, 409, 413, 422), response.text
