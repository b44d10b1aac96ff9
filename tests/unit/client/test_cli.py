"""The ``backend.ai`` CLI against the fake manager (click's CliRunner)."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bai.client.cli.main import cli
from bai.client.config import DEFAULT_IMAGE_ARCH

from .fake_manager import ACCESS_KEY, FakeManager
from .wire_bodies import RUN_CREATE_28, SESSION_CREATE_20, SESSION_CREATE_26, SESSION_LIST_27, create_body


def invoke(args: list[str], input: str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, args, input=input, env=env, catch_exceptions=False)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# -- help / version --------------------------------------------------------------------------


def test_help_lists_commands() -> None:
    r = invoke(["--help"])
    assert r.exit_code == 0
    for name in ("config", "run", "session", "start", "ps", "info", "rm", "kill"):
        assert re.search(rf"^\s+{name}\s", r.stdout, re.M), name
    assert "--output [console|json]" in r.stdout
    r = invoke(["session", "--help"])
    assert "create (start)" in r.stdout and "list (ps)" in r.stdout and "destroy (rm, kill)" in r.stdout
    for name in ("ls", "upload", "download"):  # ls: files in a session, or the sessions without one
        assert re.search(rf"^\s+{name}\s", r.stdout, re.M), name
    for sub in (["run", "--help"], ["session", "create", "--help"], ["ps", "--help"], ["rm", "--help"]):
        assert invoke(sub).exit_code == 0, sub


def test_version() -> None:
    r = invoke(["--version"])
    assert r.exit_code == 0 and r.stdout.startswith("backend.ai ")


# -- run ----------------------------------------------------------------------------------------


def test_run_rm_prints_exactly_the_program_output(fake: FakeManager) -> None:
    r = invoke(["run", "--rm", "-c", "print(6*7)", "python"])
    assert r.exit_code == 0, r.output
    assert r.stdout == "42\n"
    assert "Cleaned up the session." in r.stderr
    reqs = [(x.method, x.path_qs.split("/execute")[0]) for x in fake.requests]
    name = fake.recorded("POST", "/session")[0].json()["name"]
    sid = fake.recorded("GET", "/stream/")[0].path_qs.split("/")[3]
    assert reqs == [
        ("GET", "/"),
        ("POST", "/session"),
        ("GET", f"/stream/session/{sid}"),
        ("DELETE", f"/session/{name}"),
    ]
    assert re.fullmatch(r"pysdk-[0-9a-f]{10}", name)
    body = fake.recorded("POST", "/session")[0].body
    expected = dict(RUN_CREATE_28, name=name, architecture=DEFAULT_IMAGE_ARCH)
    assert body == json.dumps(expected).encode()
    assert fake.recorded("GET", "/stream/")[0].ws_frames == [
        '{"code": "print(6*7)", "mode": "query", "options": {}}'
    ]
    assert fake.sessions == {}


def test_run_quiet_has_no_status_messages(fake: FakeManager) -> None:
    r = invoke(["run", "-q", "--rm", "-c", "multi", "python"])
    assert r.exit_code == 0
    assert r.stdout == "tick 1\ntick 2\ndone\n"
    assert r.stderr == "warn\n"


def test_run_exit_code_and_stderr(fake: FakeManager) -> None:
    r = invoke(["run", "-q", "-c", "import sys; sys.exit(3)", "python"])
    assert r.exit_code == 3
    assert r.stdout == "" and r.stderr == "bye\n"
    assert not fake.recorded("DELETE")  # no --rm


def test_run_output_without_trailing_newline_and_unicode(fake: FakeManager) -> None:
    assert invoke(["run", "-q", "-c", "no-newline", "python"]).stdout == "3.11.2\n42"
    assert invoke(["run", "-q", "-c", "unicode", "python"]).stdout == "h\u00e9llo \u2713\n"


def test_run_reuses_named_session(fake: FakeManager) -> None:
    r1 = invoke(["run", "-t", "anchor-s1", "-c", "print(1)", "python"])
    r2 = invoke(["run", "--name", "anchor-s1", "-c", "print(1)", "python"])
    assert r1.exit_code == r2.exit_code == 0
    assert r1.stdout == r2.stdout == "1\n"
    assert "is ready" in r1.stderr
    assert "Reusing session anchor-s1" in r2.stderr
    bodies = [x.body for x in fake.recorded("POST", "/session")]
    assert bodies[0] == bodies[1]
    ws_paths = {x.path_qs for x in fake.recorded("GET", "/stream/")}
    assert ws_paths == {f"/stream/session/{fake.sessions['anchor-s1']['id']}/execute"}


def test_run_without_image_uses_the_named_session(fake: FakeManager) -> None:
    assert invoke(["session", "create", "-t", "anchor-s2", "python"]).exit_code == 0
    fake.requests.clear()
    r = invoke(["run", "-t", "anchor-s2", "-c", "print(1)"])
    assert r.exit_code == 0, r.output
    assert r.stdout == "1\n"
    assert "Reusing session anchor-s2" in r.stderr
    # one info request instead of a create: nothing is created without an image
    assert [(x.method, x.path_qs.split("/execute")[0]) for x in fake.requests] == [
        ("GET", "/"), ("GET", "/session/anchor-s2"), ("GET", "/stream/session/anchor-s2")]
    r = invoke(["--output", "json", "run", "-t", "anchor-s2", "-c", "print(1)"])
    data = json.loads(r.stdout)
    assert data["created"] is False and data["sessionName"] == "anchor-s2"
    assert data["stdout"] == "1\n" and data["exitCode"] == 0


@pytest.mark.parametrize("json_mode", [False, True])
def test_run_without_image_and_no_such_session(fake: FakeManager, json_mode: bool) -> None:
    r = invoke([*(["--output", "json"] if json_mode else []), "run", "-t", "nosuch", "-c", "x"])
    assert r.exit_code == 4 and r.stdout == ""
    assert "No session named nosuch: give an IMAGE" in r.stderr
    if json_mode:
        assert json.loads(r.stderr)["error"].startswith("No session named nosuch")
    assert not fake.recorded("POST") and not fake.recorded("GET", "/stream/")


def test_run_without_image_or_name(fake: FakeManager, tmp_path: Path) -> None:
    r = invoke(["run", "-c", "print(1)"])
    assert r.exit_code == 4 and r.stdout == ""
    assert "Give an IMAGE" in r.stderr and "-t NAME" in r.stderr
    (tmp_path / "main.py").write_text("print(1)")
    r = invoke(["run", "-t", "anchor-s3", "main.py"])
    assert r.exit_code == 4 and "main.py is a file: give the IMAGE before it" in r.stderr
    assert fake.requests == []
    assert "May be left out with -t NAME" in invoke(["run", "--help"]).stdout


def test_run_options_reach_the_body(fake: FakeManager, tmp_path: Path) -> None:
    script = tmp_path / "boot.sh"
    script.write_text("echo boot\n")
    r = invoke([
        "run", "-q", "--rm", "-c", "print(1)", "-r", "cpu=2", "-r", "mem=512", "-e", "A=1", "-e", "B=x=y",
        "--max-wait", "30", "--tag", "t1", "-g", "proj", "-d", "dom", "--scaling-group", "sg1",
        "--resource-opts", "shmem=64m", "--cluster-size", "2", "--arch", "aarch64",
        "--bootstrap-script", str(script), "--client-token", "opt-sess", "python",
    ])
    assert r.exit_code == 0, r.output
    body = fake.recorded("POST", "/session")[0].json()
    assert body["name"] == "opt-sess"
    assert body["config"]["resources"] == {"cpu": "2", "mem": "512m"}
    assert body["config"]["environ"] == {"A": "1", "B": "x=y"}
    assert body["config"]["resource_opts"] == {"shmem": "64m"}
    assert body["config"]["scalingGroup"] == "sg1"
    assert body["maxWaitSeconds"] == 30 and body["tag"] == "t1"
    assert body["group"] == "proj" and body["domain"] == "dom"
    assert body["clusterSize"] == 2 and body["architecture"] == "aarch64"
    assert body["bootstrap_script"] == "echo boot\n"
    assert body["enqueueOnly"] is False


def test_run_files_uploads_then_runs_batch_mode(fake: FakeManager, tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("print(6*7)")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "util.py").write_text("X = 1")
    r = invoke(["run", "-q", "--rm", "-t", "files-s1", "python", "main.py", "lib/util.py"])
    assert r.exit_code == 0 and r.stdout == "42\n", r.output
    assert {path: data for (_ref, path), data in fake.uploads.items()} == {"main.py": b"print(6*7)",
                                                                         "lib/util.py": b"X = 1"}
    (frame,) = fake.recorded("GET", "/stream/")[0].ws_frames
    assert json.loads(frame) == {"code": "", "mode": "batch",
                                 "options": {"clean": "*", "build": "*", "buildLog": False, "exec": "*"}}
    r = invoke(["run", "--rm", "--exec", "make test", "--build", "make", "python", "main.py"])
    assert r.exit_code == 0 and r.stdout == "exec: make test\n"
    assert "Build finished. (exit code = 0)" in r.stderr and "Uploading done." in r.stderr
    assert json.loads(fake.recorded("GET", "/stream/")[-1].ws_frames[0])["options"]["build"] == "make"


@pytest.mark.parametrize(
    "args",
    [["run", "python"], ["run", "-c", "x", "python", "main.py"], ["run", "--basedir", "/nowhere", "python", "main.py"]],
)
def test_run_argument_errors(fake: FakeManager, tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "main.py").write_text("x")
    (tmp_path / "b.py").write_text("y")
    r = invoke(args)
    assert r.exit_code == 4
    assert r.stdout == "" and r.stderr
    assert fake.requests == []


def test_run_bad_resource_expression(fake: FakeManager) -> None:
    r = invoke(["run", "-c", "x", "-r", "mem", "python"])
    assert r.exit_code == 2 and "KEY=VALUE" in r.stderr


def test_run_user_input(fake: FakeManager) -> None:
    r = invoke(["run", "-q", "--rm", "-c", "input-test", "python"], input="bob\n")
    assert r.exit_code == 0, r.output
    assert r.stdout == "name? hello, bob\n"
    assert fake.recorded("GET", "/stream/")[0].ws_frames[1] == "bob"


def test_run_stream_error_still_cleans_up(fake: FakeManager) -> None:
    r = invoke(["run", "-q", "--rm", "-c", "boom", "python"])
    assert r.exit_code == 1
    assert "kernel failure" in r.stderr
    assert fake.recorded("DELETE") and fake.sessions == {}


def test_run_json_output(fake: FakeManager) -> None:
    r = invoke(["--output", "json", "run", "--rm", "-c", "multi", "python"])
    assert r.exit_code == 0
    data = json.loads(r.stdout)
    assert data["exitCode"] == 0 and data["status"] == "finished"
    assert data["stdout"] == "tick 1\ntick 2\ndone\n" and data["stderr"] == "warn\n"
    assert data["created"] is True and data["sessionName"].startswith("pysdk-")


def test_run_session_not_started(fake: FakeManager) -> None:
    fake.create_status = "TIMEOUT"
    r = invoke(["run", "--rm", "--max-wait", "1", "-c", "print(1)", "python"])
    assert r.exit_code == 3
    assert "still on the job queue" in r.stderr
    assert not fake.recorded("GET", "/stream/")
    assert fake.recorded("DELETE")


# -- errors ------------------------------------------------------------------------------------


def test_api_error_goes_to_stderr_with_exit_1(fake: FakeManager) -> None:
    r = invoke(["session", "info", "no-such-session"])
    assert r.exit_code == 1
    assert r.stdout == ""
    assert "No such session." in r.stderr
    assert "Session (id=no-such-session) does not exist." in r.stderr
    assert "404" in r.stderr


def test_signature_mismatch_message(fake: FakeManager) -> None:
    r = invoke(["ps"], env={"BACKEND_SECRET_KEY": "not-the-secret"})
    assert r.exit_code == 1
    assert "Credential/signature mismatch." in r.stderr and "Signature mismatch" in r.stderr


def _refuse_create(fake: FakeManager) -> None:
    from .fake_manager import problem

    fake.fail_next[("POST", "/session")] = problem(
        400, "invalid-api-params", "Missing or invalid API parameters.", "Input validation error",
        {"image": "is required"},
    )


CREATE_REFUSED = ("Missing or invalid API parameters (HTTP 400): Input validation error: "
                  "image: is required")


@pytest.mark.parametrize("args", [["session", "create", "python"], ["start", "python"],
                                  ["run", "-c", "print(1)", "python"], ["run", "--rm", "-c", "print(1)", "python"]])
def test_create_refused_is_one_line(fake: FakeManager, args: list[str]) -> None:
    """session create and run report a refused creation as the other commands do: one line
    naming the command, the problem and the field, nothing on stdout, exit 1."""
    _refuse_create(fake)
    r = invoke(args)
    assert r.exit_code == 1 and r.stdout == ""
    action = "run" if args[0] == "run" else "session create"
    assert r.stderr == f"\u2717 {action} failed: {CREATE_REFUSED}\n"
    assert not fake.recorded("GET", "/stream/") and not fake.recorded("DELETE")


@pytest.mark.parametrize("args", [["session", "create", "python"], ["run", "-c", "print(1)", "python"]])
def test_create_refused_json(fake: FakeManager, args: list[str]) -> None:
    """--output json: one JSON object on stderr, the one-line message and the server's problem body."""
    _refuse_create(fake)
    r = invoke(["--output", "json", *args])
    assert r.exit_code == 1 and r.stdout == ""
    err = json.loads(r.stderr)
    assert err["error"].endswith(f"failed: {CREATE_REFUSED}")
    assert err["api"]["status"] == 400 and err["api"]["title"] == "Missing or invalid API parameters."
    assert err["api"]["data"] == {"image": "is required"}
    assert err["api"]["type"].endswith("/invalid-api-params")


def test_connection_failure_is_one_clear_line(fake: FakeManager) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    r = invoke(["run", "-c", "print(1)", "python"], env={"BACKEND_ENDPOINT": endpoint})
    assert r.exit_code == 1
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"Cannot connect to the API endpoint {endpoint}" in lines[0]


def test_json_mode_error(fake: FakeManager) -> None:
    r = invoke(["--output", "json", "info", "nope"])
    assert r.exit_code == 1
    err = json.loads(r.stderr)
    assert err["error"] == "No such session."
    assert err["api"]["status"] == 404 and err["api"]["msg"] == "Session (id=nope) does not exist."


def test_bad_config_is_reported(fake: FakeManager) -> None:
    r = invoke(["ps"], env={"BACKEND_ENDPOINT": "not-a-url"})
    assert r.exit_code == 1 and "Invalid client configuration" in r.stderr


# -- config --------------------------------------------------------------------------------------


def test_config_command(fake: FakeManager) -> None:
    fake.server_version = "v7.20230615"
    r = invoke(["config"])
    assert r.exit_code == 0
    out = r.stdout
    assert f"API endpoint: {fake.endpoint} (mode: api)" in out
    assert "Server version: 24.03.11 (API: v7.20230615)" in out
    assert "Negotiated API version: v7.20230615" in out
    assert 'Domain name: "default"' in out and 'Group name: "default"' in out
    assert f'Access key: "{ACCESS_KEY}"' in out
    assert 'Secret key: "wJalrX************************EXAMPLEKEY"' in out
    assert "Signature hash type: sha256" in out
    assert fake.recorded()[0].path_qs == "/" and len(fake.requests) == 1


def test_config_json_and_unreachable_server(fake: FakeManager) -> None:
    r = invoke(["--output", "json", "config"])
    data = json.loads(r.stdout)
    assert data["negotiated_api_version"] == "v8.20240315" and data["server_version"] == "24.03.11"
    assert data["secret_key"].startswith("wJalrX***")
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    r = invoke(["config"], env={"BACKEND_ENDPOINT": endpoint})
    assert r.exit_code == 0
    assert "Server version: (failed to fetch)" in r.stdout
    assert "Cannot connect" in r.stderr


def test_config_reads_dotenv(fake: FakeManager, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("BACKEND_GROUP=from-dotenv\n")
    r = invoke(["config"])
    assert 'Group name: "from-dotenv"' in r.stdout


# -- session create / ls / info / destroy ------------------------------------------------------


def test_session_create_body_and_output(fake: FakeManager) -> None:
    r = invoke(["session", "create", "-t", "anchor-s1", "--arch", "x86_64", "python"])
    assert r.exit_code == 0, r.output
    assert fake.recorded("POST", "/session")[0].body == json.dumps(SESSION_CREATE_20).encode()
    sid = fake.sessions["anchor-s1"]["id"]
    assert f"Session ID: {sid}" in r.stdout
    assert "Session name: anchor-s1" in r.stdout and "Status: RUNNING" in r.stdout
    assert "created and ready" in r.stderr
    again = invoke(["start", "-t", "anchor-s1", "--arch", "x86_64", "python"])
    assert again.exit_code == 0 and "already running" in again.stderr


def test_session_create_enqueue_only(fake: FakeManager) -> None:
    r = invoke(["session", "create", "--enqueue-only", "-t", "anchor-s2", "--arch", "x86_64", "python"])
    assert r.exit_code == 0
    assert fake.recorded("POST", "/session")[0].body == json.dumps(SESSION_CREATE_26).encode()
    assert "Status: PENDING" in r.stdout and "enqueued" in r.stderr


def test_session_create_more_options(fake: FakeManager, tmp_path: Path) -> None:
    r = invoke([
        "--output", "json", "session", "create", "-t", "batch-1", "--type", "batch", "-c", "python x.py",
        "--depends", "a", "--depends", "b", "--preopen", "8080,8081", "--no-reuse", "-o", "AKX", "python",
    ])
    assert r.exit_code == 0, r.output
    body = fake.recorded("POST", "/session")[0].json()
    expected = create_body("batch-1", dependencies=["a", "b"], preopen_ports=[8080, 8081],
                           architecture=DEFAULT_IMAGE_ARCH)
    expected.update(type="batch", startupCommand="python x.py", reuseIfExists=False, owner_access_key="AKX")
    assert body == expected
    data = json.loads(r.stdout)
    assert data["sessionName"] == "batch-1" and data["status"] == "RUNNING" and data["created"] is True


def test_session_list(fake: FakeManager) -> None:
    invoke(["session", "create", "-t", "anchor-s1", "python"])
    invoke(["session", "create", "-t", "anchor-s2", "python"])
    fake.requests.clear()
    r = invoke(["ps"])
    assert r.exit_code == 0
    assert fake.recorded("POST", "/admin/gql")[0].body == json.dumps(SESSION_LIST_27).encode()
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["Name", "Owner", "Access"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].startswith("anchor-s1") and lines[3].startswith("anchor-s2")
    assert ACCESS_KEY in lines[2] and "RUNNING" in lines[2]
    names = invoke(["session", "ls", "--name-only"])
    assert names.stdout == "anchor-s1\nanchor-s2\n"
    plain = invoke(["session", "list", "--plain"])
    assert plain.stdout.splitlines()[0].startswith("anchor-s1")


def test_session_list_status_options(fake: FakeManager) -> None:
    for args, status in [
        (["ps", "--all"], "PENDING,SCHEDULED,PULLING,PREPARING,RUNNING,RESTARTING,RUNNING_DEGRADED,"
                          "TERMINATING,TERMINATED,ERROR,CANCELLED"),
        (["ps", "--status", "RUNNING"], "RUNNING"),
        (["ps", "--dead"], "CANCELLED,TERMINATED"),
        (["ps", "--running"], "PREPARING,RUNNING,RUNNING_DEGRADED"),
    ]:
        fake.requests.clear()
        r = invoke(args)
        assert r.exit_code == 0
        assert fake.recorded("POST", "/admin/gql")[0].json()["variables"]["status"] == status
        assert "No matching items." in r.stderr


def test_session_list_json(fake: FakeManager) -> None:
    invoke(["session", "create", "-t", "anchor-s1", "python"])
    r = invoke(["--output", "json", "ps"])
    data = json.loads(r.stdout)
    assert data["count"] == 1 and data["total_count"] == 1
    item = data["items"][0]
    assert item["name"] == "anchor-s1" and item["session_id"] == fake.sessions["anchor-s1"]["id"]
    assert set(item) == {"name", "access_key", "session_id", "group_name", "main_kernel_id", "image",
                         "type", "status", "status_info", "status_changed", "result"}


def test_session_info(fake: FakeManager) -> None:
    invoke(["session", "create", "-t", "anchor-s3", "python"])
    r = invoke(["session", "info", "anchor-s3"])
    assert r.exit_code == 0
    assert fake.recorded("GET", "/session/")[0].path_qs == "/session/anchor-s3"
    assert re.search(r"^status\s+RUNNING$", r.stdout, re.M)
    r = invoke(["--output", "json", "info", "anchor-s3"])
    assert json.loads(r.stdout)["status"] == "RUNNING"


def test_session_destroy(fake: FakeManager) -> None:
    invoke(["session", "create", "-t", "anchor-s1", "python"])
    invoke(["session", "create", "-t", "anchor-s2", "python"])
    invoke(["session", "create", "-t", "anchor-s3", "python"])
    r = invoke(["session", "destroy", "anchor-s1"])
    assert r.exit_code == 0 and "Terminated the session anchor-s1." in r.stderr
    assert fake.recorded("DELETE")[0].path_qs == "/session/anchor-s1"
    r = invoke(["rm", "-f", "-s", "anchor-s2", "missing-one"])
    assert r.exit_code == 1
    assert "No such session." in r.stderr
    assert "Statistics of anchor-s2:" in r.stdout and "cpu_used" in r.stdout
    assert fake.recorded("DELETE")[1].path_qs == "/session/anchor-s2?forced=true"
    r = invoke(["--output", "json", "kill", "anchor-s3"])
    assert json.loads(r.stdout)["results"][0] == {
        "name": "anchor-s3", "ok": True, "stats": {"status": "terminated", "cpu_used": 120}
    }
    assert invoke(["session", "destroy"]).exit_code == 4


def test_session_endpoint_type_is_refused_clearly(fake: FakeManager) -> None:
    r = invoke(["ps"], env={"BACKEND_ENDPOINT_TYPE": "session"})
    assert r.exit_code == 1
    assert "Endpoint type 'session' is not supported" in r.stderr
    assert fake.requests == []


# -- create-from-template ------------------------------------------------------------------------


def _answer_from_template(fake: FakeManager) -> None:
    from aiohttp import web

    fake.fail_next[("POST", "/session/_/create-from-template")] = web.json_response(
        {"sessionId": "6a3f0c5e-0000-4000-8000-000000000001", "sessionName": "tpl-sess", "status": "RUNNING",
         "servicePorts": [], "created": True}, status=201)


@pytest.mark.parametrize(("extra", "config"), [
    ([], None),  # nothing given: the template's mounts (and everything else) apply
    (["--no-mount"], {"mounts": [], "mount_map": {}}),  # the official client's "no mounts"
    (["--no-mount", "-m", "data=/mnt/d"], {"mounts": ["data"], "mount_map": {"data": "/mnt/d"},
                                           "mount_options": {"data": {"type": "bind", "permission": None}}}),  # -m wins
])
def test_create_from_template_no_mount(fake: FakeManager, extra: list[str], config: dict[str, object] | None) -> None:
    _answer_from_template(fake)
    r = invoke(["session", "create-from-template", "-t", "tpl-sess", *extra, "0" * 32])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[:3] == ["Session ID: 6a3f0c5e-0000-4000-8000-000000000001",
                                         "Session name: tpl-sess", "Status: RUNNING"]
    [req] = fake.recorded("POST", "/session/_/create-from-template")
    body = req.json()
    assert body["template_id"] == "0" * 32 and body["name"] == "tpl-sess"
    assert body.get("config") == config
