"""The service-ports label and service-definition parsers (bai.common.service_ports), the
agent's host-port pool and service-port planning, and the runner's start-service bookkeeping
on real processes (a real TCP listener, a command that exits, a port that never listens)."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bai.agent.ports import NoFreePorts, PortPool
from bai.agent.services import plan_service_ports, publish, restore_from_labels, start_request
from bai.common.agent_rpc import InvalidInput
from bai.common.service_ports import (
    ServicePortError,
    check_client_options,
    parse_service_definition,
    parse_service_ports,
    template_variables,
)
from bai.kernel import services as runner_services

# ------------------------------------------------------------------ label


def test_label_single_and_list_ports() -> None:
    ports = parse_service_ports("jupyter:http:8080, vscode:http:[8180,8181],ssh2:tcp:2222,term:pty:8090,"
                                "web:preopen:[9000]")
    assert [(p.name, p.protocol, p.container_ports) for p in ports] == [
        ("jupyter", "http", (8080,)), ("vscode", "http", (8180, 8181)), ("ssh2", "tcp", (2222,)),
        ("web", "preopen", (9000,))]  # pty entries are skipped


@pytest.mark.parametrize("raw", ["", None, " ", ","])
def test_empty_label(raw: str | None) -> None:
    assert parse_service_ports(raw) == []


def test_inference_ports_marked() -> None:
    ports = parse_service_ports("model:preopen:9000,ui:http:8080", endpoint_ports=["model"])
    assert [p.is_inference for p in ports] == [True, False]


@pytest.mark.parametrize(("raw", "why"), [
    ("jupyter:https:8080", "unknown protocol"),
    ("jupyter:udp:8080", "unknown protocol"),
    ("jupyter:http:1024", "not in 1025-65534"),
    ("jupyter:http:80", "not in 1025-65534"),
    ("jupyter:http:65535", "not in 1025-65534"),
    ("jupyter:http:2000", "reserved"),
    ("x:http:7681", "reserved"),
    ("a:http:8080,b:tcp:8080", "declared twice"),
    ("a:http:[8080,8080]", "declared twice"),
    ("a:http:8080,a:tcp:8081", "declared twice"),
    ("ttyd:http:8080", "reserved for the platform"),
    ("jupyter http 8080", "not name:protocol:port"),
    ("jupyter:http:", "not name:protocol:port"),
    ("jup yter:http:8080", "not name:protocol:port"),
    ("jupyter:http:[]", "not name:protocol:port"),
    ("jupyter:http:8080;rm -rf /", "not name:protocol:port"),
    ("a:http:[" + ",".join(str(p) for p in range(3000, 3020)) + "]", "more than"),
])
def test_bad_labels(raw: str, why: str) -> None:
    with pytest.raises(ServicePortError, match=why):
        parse_service_ports(raw)


def test_stored_shape() -> None:
    (port,) = parse_service_ports("jupyter:http:8080")
    assert port.model_copy(update={"host_ports": (30001,)}).stored() == {
        "name": "jupyter", "protocol": "http", "container_ports": [8080], "host_ports": [30001],
        "is_inference": False}


# ------------------------------------------------------------------ definitions

JUPYTER = {
    "prestart": [
        {"action": "write_tempfile", "args": {"body": ["c.ServerApp.port = {ports[0]}"]}, "ref": "config"},
        {"action": "mkdir", "args": {"path": "{home}/.jupyter"}},
        {"action": "run_command", "args": {"command": ["echo", "{config}"]}, "ref": "echoed"},
        {"action": "write_file", "args": {"filename": "{home}/x.txt", "body": ["{echoed[out]}"], "mode": "644",
                                          "append": True}},
        {"action": "log", "args": {"body": "starting on {ports[0]}", "debug": True}},
    ],
    "command": ["{venv_path}/bin/jupyter", "lab", "--port={ports[0]}", "--config={config}", "{runtime_path}"],
    "url_template": "{protocol}://{host}:{port}/",
    "allowed_arguments": ["--ServerApp.base_url"],
    "allowed_envs": ["JUPYTER_TOKEN"],
    "default_arguments": {"--ServerApp.base_url": "/"},
    "env": {"PORT": "{ports[0]}"},
}


def test_good_definition() -> None:
    d = parse_service_definition("jupyter", json.dumps(JUPYTER))
    assert d.command[0] == "{venv_path}/bin/jupyter"
    assert [a.action for a in d.prestart] == ["write_tempfile", "mkdir", "run_command", "write_file", "log"]
    assert d.allowed_envs == ["JUPYTER_TOKEN"]


@pytest.mark.parametrize(("change", "why"), [
    ({"command": ["x", "{nope}"]}, "unknown variable"),
    ({"command": ["x", "{ports.__class__}"]}, "attribute access"),
    ({"command": ["x", "{0}"]}, "positional"),
    ({"command": ["x", "{ports"]}, "bad template"),
    ({"command": []}, "command"),
    ({"command": "jupyter lab"}, "command"),
    ({"command": ["x"], "unknown_key": 1}, "unknown_key"),
    ({"prestart": [{"action": "rm_rf", "args": {}}]}, "action"),
    ({"prestart": [{"action": "mkdir", "args": {"path": "x", "extra": 1}}]}, "extra"),
    ({"prestart": [{"action": "mkdir", "args": {}}]}, "path"),
    ({"prestart": [{"action": "write_file", "args": {"filename": "f", "body": ["x"], "mode": "999"}}]}, "mode"),
    ({"prestart": [{"action": "log", "args": {"body": "{later}"}},
                   {"action": "write_tempfile", "args": {"body": []}, "ref": "later"}]}, "unknown variable"),
    ({"prestart": [{"action": "mkdir", "args": {"path": "x"}, "ref": "ports"}]}, "hide a predefined"),
    ({"allowed_envs": ["LD_PRELOAD=x"]}, "environment variable name"),
    ({"allowed_arguments": ["--a b"]}, "option name"),
    ({"default_arguments": {"--other": "1"}}, "not in allowed_arguments"),
    ({"env": {"X": "{secret}"}}, "unknown variable"),
])
def test_bad_definitions(change: dict[str, Any], why: str) -> None:
    with pytest.raises(ServicePortError, match=why):
        parse_service_definition("svc", {**JUPYTER, **change})


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b"{" * 5, json.dumps({"command": ["x" * 70000]})])
def test_unparseable_definitions(raw: bytes | str) -> None:
    with pytest.raises(ServicePortError):
        parse_service_definition("svc", raw)


def test_template_variables() -> None:
    assert template_variables("{ports[0]}:{home}/{x[out]} {{literal}}") == {"ports", "home", "x"}


def test_client_options_allowed_and_refused() -> None:
    d = parse_service_definition("jupyter", JUPYTER)
    args, envs = check_client_options("jupyter", d, {}, {"JUPYTER_TOKEN": "t"})
    assert args == {"--ServerApp.base_url": "/"} and envs == {"JUPYTER_TOKEN": "t"}
    args, _ = check_client_options("jupyter", d, {"--ServerApp.base_url": "/proxy/x"}, None)
    assert args == {"--ServerApp.base_url": "/proxy/x"}
    with pytest.raises(ServicePortError, match=r"argument\(s\) --ServerApp.token"):
        check_client_options("jupyter", d, {"--ServerApp.token": ""}, None)
    with pytest.raises(ServicePortError, match=r"environment variable\(s\) LD_PRELOAD"):
        check_client_options("jupyter", d, None, {"LD_PRELOAD": "/tmp/x.so"})
    with pytest.raises(ServicePortError, match="must be a string"):
        check_client_options("jupyter", d, {"--ServerApp.base_url": 5}, None)
    with pytest.raises(ServicePortError, match="NUL"):
        check_client_options("jupyter", d, None, {"JUPYTER_TOKEN": "a\x00b"})


# ------------------------------------------------------------------ agent side


def test_port_pool_allocates_releases_and_skips_busy_ports() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        pool = PortPool(port, port + 2)
        got = pool.allocate("k1", 2)
        assert port not in got and len(got) == 2  # something else holds `port`
        with pytest.raises(NoFreePorts):
            pool.allocate("k2", 1)
        pool.release("k1")
        assert pool.free == 3
        assert len(pool.allocate("k2", 2)) == 2


def test_port_pool_restore() -> None:
    pool = PortPool(40000, 40009)
    pool.restore("k1", [40001, 40002, 50000])
    assert pool.held("k1") == [40001, 40002] and pool.free == 8


def test_plan_publish_restore() -> None:
    defs = {"ttyd": parse_service_definition("ttyd", {"command": ["ttyd", "-p", "{ports[0]}"]}),
            "jupyter": parse_service_definition("jupyter", JUPYTER)}
    planned = plan_service_ports({"ai.backend.service-ports": "jupyter:http:8080,other:tcp:[9000,9001]"}, defs)
    assert [(p.name, p.container_ports) for p in planned] == [
        ("jupyter", (8080,)), ("other", (9000, 9001)), ("ttyd", (7681,))]
    assert planned[0].url_template == JUPYTER["url_template"] and planned[1].url_template is None
    pool = PortPool(41000, 41100)
    body: dict[str, Any] = {"HostConfig": {}, "Labels": {}, "Env": []}
    published = publish("k1", planned, pool, body, "jupyter:http:8080,other:tcp:[9000,9001]")
    assert [len(p.host_ports) for p in published] == [1, 2, 1]
    assert body["HostConfig"]["PortBindings"]["8080/tcp"] == [
        {"HostIp": "127.0.0.1", "HostPort": str(published[0].host_ports[0])}]
    assert set(body["ExposedPorts"]) == {"8080/tcp", "9000/tcp", "9001/tcp", "7681/tcp"}
    assert "BACKENDAI_SERVICE_PORTS=jupyter:http:8080,other:tcp:[9000,9001]" in body["Env"]
    other = PortPool(41000, 41100)
    assert restore_from_labels("k1", body["Labels"], other) == published
    assert sorted(other.held("k1")) == sorted(pool.held("k1"))


def test_start_request_checks() -> None:
    defs = {"jupyter": parse_service_definition("jupyter", JUPYTER)}
    ports = plan_service_ports({"ai.backend.service-ports": "jupyter:http:8080,web:preopen:9000,bare:http:9100"}, defs)
    with pytest.raises(InvalidInput, match=r"no service 'nope' \(its services: jupyter, web, bare\)"):
        start_request("nope", ports, defs, "/usr/bin/python3", {})
    with pytest.raises(InvalidInput, match="preopen"):
        start_request("web", ports, defs, "/usr/bin/python3", {})
    with pytest.raises(InvalidInput, match="no definition"):
        start_request("bare", ports, defs, "/usr/bin/python3", {})
    with pytest.raises(InvalidInput, match="LD_PRELOAD"):
        start_request("jupyter", ports, defs, "/usr/bin/python3", {"envs": {"LD_PRELOAD": "x"}})
    msg = start_request("jupyter", ports, defs, "/opt/venv/bin/python3", {"envs": {"JUPYTER_TOKEN": "t"}})
    assert msg["ports"] == [8080] and msg["envs"] == {"JUPYTER_TOKEN": "t"}
    assert msg["definition"]["command"][0] == "{venv_path}/bin/jupyter"


# ------------------------------------------------------------------ runner side (real processes)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Collector:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def __call__(self, record: dict[str, Any]) -> None:
        self.records.append(record)


def _settle(services: runner_services.Services, sent: _Collector, count: int, limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while len(sent.records) < count:
        assert time.monotonic() < deadline, sent.records
        services.poll()
        time.sleep(runner_services.POLL_INTERVAL)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(runner_services, "WORK_DIR", str(tmp_path))
    return tmp_path


def _message(req: str, definition: dict[str, Any], port: int, **extra: Any) -> dict[str, Any]:
    checked = parse_service_definition("svc", definition).model_dump(mode="json")
    return {"op": "start-service", "req": req, "name": "svc", "protocol": "http", "ports": [port],
            "definition": checked, "arguments": {}, "envs": {}, "runtime_path": sys.executable, **extra}


def test_runner_starts_then_running_then_after_exit_again(workdir: Path) -> None:
    port = _free_port()
    sent = _Collector()
    services = runner_services.Services(sent, lambda: {"PATH": "/usr/bin:/bin"})
    definition = {
        "prestart": [{"action": "write_file", "args": {"filename": "{home}/marker", "body": ["{ports[0]}"]}}],
        "command": ["{runtime_path}", "-m", "http.server", "--bind", "127.0.0.1", "{ports[0]}"],
        "allowed_envs": ["GREETING"],
    }
    services.start(_message("r1", definition, port, envs={"GREETING": "hi"}))
    services.start(_message("r2", definition, port))  # while starting: waits, then "running"
    _settle(services, sent, 2)
    assert [(r["req"], r["data"]) for r in sent.records] == [("r1", {"status": "started"}),
                                                            ("r2", {"status": "running"})]
    assert (workdir / "marker").read_text() == f"{port}\n"
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    services.start(_message("r3", definition, port))
    assert sent.records[-1] == {"type": "service-result", "req": "r3", "data": {"status": "running"}}
    services.shutdown()


def test_runner_reports_a_command_that_exits(workdir: Path) -> None:
    sent = _Collector()
    services = runner_services.Services(sent, lambda: {"PATH": "/usr/bin:/bin"})
    services.start(_message("r1", {"command": ["/bin/sh", "-c", "echo no such thing >&2; exit 3"]}, _free_port()))
    _settle(services, sent, 1)
    data = sent.records[0]["data"]
    assert data["status"] == "failed" and "status 3" in data["error"] and "no such thing" in data["error"]


def test_runner_reports_a_missing_binary_and_a_failing_prestart(workdir: Path) -> None:
    sent = _Collector()
    services = runner_services.Services(sent, lambda: {})
    services.start(_message("r1", {"command": ["/nonexistent/binary"]}, _free_port()))
    services.start(_message("r2", {"prestart": [{"action": "run_command", "args": {"command": ["/nonexistent"]}}],
                                   "command": ["true"]}, _free_port()))
    assert [r["data"]["status"] for r in sent.records] == ["failed", "failed"]
    assert "cannot start" in sent.records[0]["data"]["error"]
    assert "prestart[0]" in sent.records[1]["data"]["error"]


def test_runner_kills_a_service_that_never_listens(workdir: Path) -> None:
    sent = _Collector()
    services = runner_services.Services(sent, lambda: {})
    services.start(_message("r1", {"command": ["/bin/sleep", "30"]}, _free_port(), timeout=0.5))
    _settle(services, sent, 1)
    assert sent.records[0]["data"]["status"] == "failed"
    assert "did not listen" in sent.records[0]["data"]["error"]
    assert not services.starting


def test_publish_without_ports_only_passes_the_label_on() -> None:
    body: dict[str, Any] = {"HostConfig": {}, "Labels": {}, "Env": []}
    assert publish("k1", [], PortPool(42000, 42001), body, None) == []
    assert body == {"HostConfig": {}, "Labels": {}, "Env": ["BACKENDAI_SERVICE_PORTS="]}


def test_definitions_read_from_an_image_archive() -> None:
    import io
    import tarfile

    from bai.agent.services import _definitions_from_tar

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in [("service-defs/ttyd.json", b'{"command": ["ttyd", "-p", "{ports[0]}"]}'),
                           ("service-defs/bad.json", b'{"command": ["x", "{secret}"]}'),
                           ("service-defs/notes.txt", b"not a definition"),
                           ("service-defs/sub/deep.json", b'{"command": ["x"]}')]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    defs = _definitions_from_tar(tarfile.open(fileobj=buf))
    assert list(defs) == ["ttyd"]  # the bad one is skipped, not fatal; nothing outside the folder
