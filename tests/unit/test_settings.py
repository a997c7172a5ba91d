"""Settings: production refuses weak secrets; development makes its own, once."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.config import PRODUCTION_DATA_DIR, Settings
from app.services.workspace import FileCaps

STRONG = "k" * 32


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"secret_key": STRONG}, "ADMIN_API_KEYS must be set"),
        (
            {"admin_api_keys": "short", "secret_key": STRONG},
            "ADMIN_API_KEYS entry must be at least",
        ),
        ({"admin_api_keys": f"{STRONG},short", "secret_key": STRONG}, "entry must be at least"),
        ({"admin_api_keys": STRONG}, "SECRET_KEY must be set"),
        ({"admin_api_keys": STRONG, "secret_key": ""}, "SECRET_KEY must be set"),
        ({"admin_api_keys": STRONG, "secret_key": "short"}, "SECRET_KEY must be at least 32"),
    ],
)
def test_production_refuses_weak_secrets(values: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _settings(app_env="production", **values)


def test_production_accepts_strong_secrets() -> None:
    settings = _settings(
        app_env="production", admin_api_keys=f"{STRONG}, {'x' * 40}", secret_key=STRONG
    )
    assert settings.admin_key_values == (STRONG, "x" * 40)


def test_production_keeps_its_data_outside_the_checkout(tmp_path: Path) -> None:
    strong = {"admin_api_keys": STRONG, "secret_key": STRONG}
    assert _settings(app_env="production", **strong).data_dir == PRODUCTION_DATA_DIR
    assert _settings(**strong).data_dir == Path("./.data")
    chosen = _settings(app_env="production", data_dir=tmp_path, **strong)
    assert chosen.data_dir == tmp_path


def test_development_makes_and_keeps_an_admin_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = _settings(data_dir=tmp_path)
    first.ensure_development_secrets()
    key_file = tmp_path / "admin_api_key"
    key = key_file.read_text().strip()
    assert first.admin_key_values == (key,)
    assert len(key) >= 32
    assert key_file.stat().st_mode & 0o777 == 0o600
    printed = capsys.readouterr().out
    assert str(key_file) in printed and key not in printed

    second = _settings(data_dir=tmp_path)
    second.ensure_development_secrets()
    assert second.admin_key_values == (key,)
    assert capsys.readouterr().out == ""
    assert second.secret_key is not None and first.secret_key is not None
    assert second.secret_key.get_secret_value() == first.secret_key.get_secret_value()
    # The made secret key is a Fernet key: URL-safe base64 of 32 bytes.
    assert len(base64.urlsafe_b64decode(first.secret_key.get_secret_value())) == 32


def test_configured_admin_key_is_used_as_is(tmp_path: Path) -> None:
    settings = _settings(data_dir=tmp_path, admin_api_keys="mine")
    settings.ensure_development_secrets()
    assert settings.admin_key_values == ("mine",)
    assert not (tmp_path / "admin_api_key").exists()


def test_secrets_do_not_show_in_repr() -> None:
    settings = _settings(
        admin_api_keys=STRONG, secret_key="hush", database_url="postgresql://u:pw@h/db"
    )
    text = repr(settings)
    assert STRONG not in text and "hush" not in text and "pw" not in text


def test_the_service_refuses_to_start_in_production_without_keys(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "APP_ENV": "production",
        "DATA_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "-m", "app"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "Refusing to start" in result.stderr and "ADMIN_API_KEYS" in result.stderr


def test_file_caps_by_type_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_FILE_BYTES", "100")
    monkeypatch.setenv("MAX_FILE_BYTES_BY_TYPE", '{"Text/*": 10, "text/csv": 50}')
    settings = _settings()
    caps = FileCaps(settings.max_file_bytes, settings.max_file_bytes_by_type)
    # the exact type before its family, the family before the default
    assert [caps.for_path(p) for p in ("a.csv", "a.md", "a.bin", "a")] == [50, 10, 100, 100]


@pytest.mark.parametrize("pattern", ["text", "*/*", "text/x*", "/plain", "text/"])
def test_file_caps_refuse_what_is_not_a_type(pattern: str) -> None:
    with pytest.raises(ValidationError, match="is not a MIME type"):
        _settings(max_file_bytes_by_type={pattern: 10})
