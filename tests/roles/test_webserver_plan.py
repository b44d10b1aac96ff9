"""The webserver role: the config it writes (loaded by the webserver's own model), its
unprivileged service and readiness check, the generated admin password kept once, no secret on any
command line, and where the web address comes from."""

from __future__ import annotations

import tomllib

from bai.webserver.config import WebserverConfig
from roles import settings as settings_mod
from roles import webserver

SECRETS = {"redis_password": "r" * 24, "webserver_admin_password": "w" * 24}


def test_admin_password_is_generated_once_and_kept() -> None:
    first = settings_mod.generate_secrets({})
    assert len(first["webserver_admin_password"]) >= 16
    assert settings_mod.generate_secrets(settings_mod.parse_secrets(settings_mod.render_secrets(first))) == first


def test_config_loads_with_the_webservers_model() -> None:
    s = settings_mod.build({}, SECRETS)
    cfg = WebserverConfig.model_validate(tomllib.loads(webserver.config_text(s)))
    assert (cfg.service.ip, cfg.service.port) == ("127.0.0.1", 8080)
    assert cfg.api.endpoint == "http://127.0.0.1:8081"
    assert cfg.session.redis.addr == "127.0.0.1:6379" and cfg.session.redis.password == "r" * 24
    assert cfg.session.redis.db == 5 and cfg.session.max_age == 604800
    assert set(cfg.security.csp_connect_src) == {"http://127.0.0.1:6021", "http://127.0.0.1:5050"}
    assert s.webserver.endpoint == "http://127.0.0.1:8080"
    public = settings_mod.build({"webserver": {"ip": "0.0.0.0", "public_url": "https://bai.example/"}}, SECRETS)
    assert public.webserver.endpoint == "https://bai.example"
    assert settings_mod.build({"webserver": {"ip": "0.0.0.0"}}, SECRETS).webserver.endpoint == "http://127.0.0.1:8080"


def test_the_service_runs_unprivileged_and_no_secret_is_on_a_command_line() -> None:
    s = settings_mod.build({}, SECRETS)
    svc = webserver.service(s)
    assert svc.user == webserver.USER and svc.unit_text is not None and f"User={webserver.USER}\n" in svc.unit_text
    assert "/server/login-check" in svc.ready and "--expect authenticated=False" in svc.ready
    for text in (svc.command, svc.ready, webserver.admin_login_command(s, True),
                 webserver.admin_login_command(s, False)):
        assert "w" * 24 not in text and "r" * 24 not in text
    assert [p.port for p in webserver.ports(s)] == [8080]
