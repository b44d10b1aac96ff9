from __future__ import annotations

from pathlib import Path

import pytest

from bai.client.config import (
    API_VERSION,
    APIConfig,
    bool_env,
    find_dotenv,
    format_api_version,
    get_env,
    parse_api_version,
    parse_dotenv,
)
from bai.client.exceptions import BackendClientError


def test_defaults_from_empty_env(tmp_path: Path) -> None:
    cfg = APIConfig.from_env({}, cwd=tmp_path)
    assert cfg.endpoints == ["https://api.cloud.backend.ai"]
    assert cfg.endpoint == "https://api.cloud.backend.ai"
    assert cfg.endpoint_type == "api"
    assert cfg.domain == "default"
    assert cfg.group == "default"
    assert cfg.access_key == "" and cfg.is_anonymous
    assert cfg.version == "v8.20240315" == format_api_version(API_VERSION)
    assert cfg.hash_type == "sha256"
    assert cfg.connection_timeout == 10.0
    assert cfg.read_timeout == 0.0
    assert cfg.skip_sslcert_validation is False
    assert cfg.vfolder_mounts == []


def test_backend_vars_win_over_sorna(tmp_path: Path) -> None:
    env = {
        "BACKEND_ENDPOINT": "http://127.0.0.1:8081",
        "SORNA_ENDPOINT": "http://10.0.0.1:8080",
        "SORNA_ACCESS_KEY": "AKLEGACY",
        "SORNA_SECRET_KEY": "legacy-secret-key-0123456789",
        "BACKEND_DOMAIN": "dom",
        "SORNA_GROUP": "proj",
        "BACKEND_CONNECTION_TIMEOUT": "2.5",
        "SORNA_READ_TIMEOUT": "30",
        "BACKEND_SKIP_SSLCERT_VALIDATION": "yes",
        "BACKEND_VFOLDER_MOUNTS": "a,b",
    }
    cfg = APIConfig.from_env(env, cwd=tmp_path)
    assert cfg.endpoint == "http://127.0.0.1:8081"
    assert cfg.access_key == "AKLEGACY"
    assert cfg.secret_key == "legacy-secret-key-0123456789"
    assert cfg.domain == "dom"
    assert cfg.group == "proj"
    assert cfg.connection_timeout == 2.5
    assert cfg.read_timeout == 30.0
    assert cfg.skip_sslcert_validation is True
    assert cfg.vfolder_mounts == ["a", "b"]


def test_multiple_endpoints_and_rotation(tmp_path: Path) -> None:
    env = {"BACKEND_ENDPOINT": "http://a:1,http://b:2"}
    cfg = APIConfig.from_env(env, cwd=tmp_path, shuffle=False)
    assert cfg.endpoints == ["http://a:1", "http://b:2"]
    cfg.rotate_endpoints()
    assert cfg.endpoint == "http://b:2"
    shuffled = APIConfig.from_env(env, cwd=tmp_path)
    assert sorted(shuffled.endpoints) == ["http://a:1", "http://b:2"]


@pytest.mark.parametrize(
    "key,value",
    [
        ("BACKEND_ENDPOINT", "127.0.0.1:8081"),
        ("BACKEND_ENDPOINT", "ftp://x"),
        ("BACKEND_CONNECTION_TIMEOUT", "soon"),
        ("BACKEND_SKIP_SSLCERT_VALIDATION", "maybe"),
    ],
)
def test_invalid_values_raise_client_error(tmp_path: Path, key: str, value: str) -> None:
    with pytest.raises(BackendClientError, match="Invalid client configuration"):
        APIConfig.from_env({key: value}, cwd=tmp_path)


def test_session_endpoint_type_uses_dummy_keys(tmp_path: Path) -> None:
    cfg = APIConfig.from_env(
        {"BACKEND_ENDPOINT_TYPE": "session", "BACKEND_ACCESS_KEY": "AK"}, cwd=tmp_path
    )
    assert cfg.endpoint_type == "session"
    assert cfg.access_key == "dummy"


def test_dotenv_is_found_upwards_and_overrides(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "# comment\n"
        "export BACKEND_ENDPOINT=http://127.0.0.1:9999\n"
        "BACKEND_ACCESS_KEY='AKFROMDOTENV'\n"
        'BACKEND_SECRET_KEY="sec\\"ret"  # trailing comment\n'
        "BACKEND_GROUP=proj  # inline comment\n"
        "BACKEND_DOMAIN=${BASE_DOMAIN:-fallback}\n"
    )
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    assert find_dotenv(sub) == tmp_path / ".env"
    env = {"BACKEND_ENDPOINT": "http://overridden:1", "BACKEND_ACCESS_KEY": "AKENV"}
    cfg = APIConfig.from_env(env, cwd=sub)
    assert cfg.endpoint == "http://127.0.0.1:9999"  # .env overrides the environment
    assert cfg.access_key == "AKFROMDOTENV"
    assert cfg.secret_key == 'sec"ret'
    assert cfg.group == "proj"
    assert cfg.domain == "fallback"
    assert env["BACKEND_ENDPOINT"] == "http://127.0.0.1:9999"


def test_dotenv_can_be_disabled(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("BACKEND_DOMAIN=fromfile\n")
    cfg = APIConfig.from_env({}, cwd=tmp_path, dotenv=False)
    assert cfg.domain == "default"


def test_parse_dotenv_details() -> None:
    text = 'A=1\nB="multi\nline"\nC=\'raw ${A}\'\nD="x${A}y"\nE\n  # c\nF = spaced value \n'
    assert parse_dotenv(text, {}) == {
        "A": "1",
        "B": "multi\nline",
        "C": "raw ${A}",
        "D": "x1y",
        "F": "spaced value",
    }


def test_get_env_and_bool_env() -> None:
    assert get_env("domain", "d", environ={"SORNA_DOMAIN": "s"}) == "s"
    assert get_env("domain", "d", environ={}) == "d"
    with pytest.raises(KeyError):
        get_env("domain", environ={})
    assert bool_env("T") and bool_env("1") and not bool_env("no") and not bool_env("F")
    with pytest.raises(ValueError):
        bool_env("perhaps")


def test_api_version_parsing_and_masking(tmp_path: Path) -> None:
    assert parse_api_version("v7.20230615") == (7, "20230615")
    with pytest.raises(ValueError):
        parse_api_version("8.2024")
    cfg = APIConfig.from_env(
        {"BACKEND_SECRET_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}, cwd=tmp_path
    )
    assert cfg.masked_secret_key == "wJalrX" + "*" * 24 + "EXAMPLEKEY"
