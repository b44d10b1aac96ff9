"""The README's shell examples, run as written against the installed node, the way a newcomer
pastes them: one fresh login shell (``bash -l`` with an empty environment, so ``PATH`` comes from
the system's profile only), every ```` ```bash ```` block of README.md in order.

A block is left out only when the line before its fence is ``<!-- readme-test: skip ... -->``
(the install commands: this test runs inside ``bash tests/run.sh``). A comment ``# ... prints X``
after a command asks for a line ``X`` in that command's output. Sessions the examples name
(``-t NAME``) that did not exist before are destroyed afterwards, pass or fail.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import Api

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
SKIP = re.compile(r"^<!--\s*readme-test:\s*skip\b.*-->$")
FENCE = re.compile(r"^```(\w*)\s*$")
PRINTS = re.compile(r"#.*\bprints (\S+?)[,.;]?(?:\s|$)")
NAME = re.compile(r"(?:^|\s)(?:-t|--name)\s+([A-Za-z0-9_.-]+)")
DEADLINE = 300.0  # whole README, seconds
BIN_DIR = "/opt/bai/bin"
COMMANDS = ("backend.ai", "bai-install", "bai-manager", "bai-agent")
# a fresh login: nothing inherited from pytest's environment
LOGIN_ENV = {"HOME": "/root", "USER": "root", "LOGNAME": "root", "SHELL": "/bin/bash",
             "TERM": "dumb", "LANG": "C.UTF-8"}


@dataclass(frozen=True)
class Command:
    line: int  # 1-based line in README.md
    text: str
    expect: str | None  # a line the output must hold ("prints X")


@dataclass(frozen=True)
class Block:
    line: int
    lang: str
    body: list[tuple[int, str]]
    skipped: bool


def blocks(markdown: str) -> list[Block]:
    found: list[Block] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m.group(1)
        prev = next((x.strip() for x in reversed(lines[:start]) if x.strip()), "")
        body = []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append((i + 1, lines[i]))
            i += 1
        found.append(Block(start + 1, lang, body, bool(SKIP.match(prev))))
        i += 1
    return found


def commands(block: Block) -> list[Command]:
    """One command per logical line (backslash continuations joined); comments and blank lines
    are not commands."""
    out: list[Command] = []
    pending: tuple[int, str] | None = None
    for no, raw in block.body:
        if pending is not None:
            no, raw = pending[0], pending[1] + "\n" + raw
            pending = None
        if raw.rstrip().endswith("\\"):
            pending = (no, raw)
            continue
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        m = PRINTS.search(raw)
        out.append(Command(no, raw.strip(), m.group(1) if m else None))
    assert pending is None, f"README.md line {pending[0]}: continuation never ends"
    return out


def readme_commands() -> list[Command]:
    bash = [b for b in blocks(README.read_text()) if b.lang in ("bash", "sh", "shell")]
    return [c for b in bash if not b.skipped for c in commands(b)]


def script(cmds: list[Command]) -> str:
    """The commands as written, each framed by markers, stopping at the first failure."""
    parts = ["exec 2>&1"]
    for i, c in enumerate(cmds):
        parts += [
            f"printf '\\n@@readme {i}@@\\n'",
            c.text,
            f"__rc=$?; if [ $__rc -ne 0 ]; then printf '\\n@@readme-failed {i} %s@@\\n' \"$__rc\"; "
            "exit 97; fi",
        ]
    parts.append("printf '\\n@@readme-done@@\\n'")
    return "\n".join(parts) + "\n"


def outputs(text: str) -> dict[int, str]:
    """Each command's output (stdout and stderr, interleaved), by its index."""
    found: dict[int, str] = {}
    chunks = re.split(r"\n?@@readme (\d+)@@\n", text)
    for idx, chunk in zip(chunks[1::2], chunks[2::2], strict=True):
        found[int(idx)] = re.split(r"\n?@@readme-(?:failed|done)", chunk)[0]
    return found


def test_readme_marks_only_the_install_block_as_skipped() -> None:
    bash = [b for b in blocks(README.read_text()) if b.lang == "bash"]
    skipped = [[c.text.split("#")[0].strip() for c in commands(b)] for b in bash if b.skipped]
    # the install commands (this test runs inside the second), and the cloud provisioning block
    # (it needs the Pulumi CLI and an AWS account, which no test machine has)
    assert skipped[0] == ["bash installer/bootstrap.sh", "bash tests/run.sh"]
    assert [block[0] for block in skipped[1:]] == [
        "pip install -e '.[stack]' && pulumi login && pulumi stack init prod"]
    assert len(readme_commands()) >= 5


def test_new_login_shell_has_the_commands() -> None:
    r = subprocess.run(["env", "-i", *(f"{k}={v}" for k, v in LOGIN_ENV.items()), "bash", "-l", "-c",
                        "for c in " + " ".join(COMMANDS) + "; do command -v $c; done"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.stdout.split() == [f"{BIN_DIR}/{c}" for c in COMMANDS], r.stdout + r.stderr


def test_client_env_alone_puts_backend_ai_on_path() -> None:
    r = subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", "bash", "--norc", "--noprofile", "-c",
                        ". /etc/backend.ai/client.env && backend.ai --version"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and r.stdout.startswith("backend.ai "), r.stdout + r.stderr


def test_readme_examples_run_as_written(api: Api, node_env: dict[str, str],
                                        tmp_path: Path) -> None:
    cmds = readme_commands()
    names = sorted({m for c in cmds for m in NAME.findall(c.text)})
    existed = {n for n in names if api.call("GET", f"/session/{n}")[0] == 200}
    path = tmp_path / "readme.sh"
    path.write_text(script(cmds))
    t0 = time.monotonic()
    proc = subprocess.Popen(["env", "-i", *(f"{k}={v}" for k, v in LOGIN_ENV.items()), "bash", "-l",
                             str(path)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        try:
            text, _ = proc.communicate(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            text, _ = proc.communicate(timeout=30)
            out = outputs(text)
            last = cmds[max(out)] if out else None
            pytest.fail(f"README examples still running after {DEADLINE:.0f}s; last started: "
                        f"line {last.line if last else '?'}: {last.text if last else '?'}\n"
                        f"{out.get(max(out), '') if out else text}")
        print(f"README examples: {len(cmds)} commands in {time.monotonic() - t0:.1f}s")
        out = outputs(text)
        failed = re.search(r"@@readme-failed (\d+) (\d+)@@", text)
        if failed:
            c = cmds[int(failed.group(1))]
            pytest.fail(f"README.md line {c.line}: `{c.text}` exited {failed.group(2)}; "
                        f"its output:\n{out.get(int(failed.group(1)), '')}")
        assert "@@readme-done@@" in text, f"the shell stopped early (exit {proc.returncode}):\n{text}"
        for i, c in enumerate(cmds):
            if c.expect is not None:
                got = out.get(i, "")
                assert c.expect in got.splitlines(), (
                    f"README.md line {c.line}: `{c.text}` should print {c.expect}; it printed:\n{got}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        for n in names:
            if n not in existed:
                subprocess.run(["/opt/bai/venv/bin/backend.ai", "session", "destroy", "-f", n],
                               env=node_env, capture_output=True, timeout=60)
