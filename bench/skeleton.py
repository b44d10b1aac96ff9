"""Walking-skeleton benchmark against this machine's installed node.

Prints, in one run, the median and spread of
  (a) create-to-RUNNING latency of a session      vs  `docker run --rm IMAGE python3 -c pass`
  (b) `backend.ai run --rm -c 'print(1)' python`   vs  `docker run --rm IMAGE python3 -c 'print(1)'`
  (c) one query-mode execute round trip (REST)      vs  `docker exec CONTAINER python3 -c 'print(1)'`
Targets: (a) <= 1.5x raw docker run, (b) < 2 s, (c) < 10 ms median.

Usage: /opt/bai/venv/bin/python bench/skeleton.py [--rounds N] [--queries N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.e2e.conftest import ENV_FILE, VENV_BIN, Api, _read_env_file  # noqa: E402

IMAGE = "bai.local/stable/python:3.11-debian12"


def timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def summary(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {"median": statistics.median(s), "min": s[0], "max": s[-1],
            "p90": s[min(len(s) - 1, int(len(s) * 0.9))],
            "stdev": statistics.stdev(s) if len(s) > 1 else 0.0, "n": len(s)}


def sh(*args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, env=env).stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    env = {**_read_env_file()}
    full_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", **env}
    api = Api(env)
    fast = Api(env, keepalive=True)
    assert ENV_FILE.exists()

    raw_run, raw_print, created, cli = [], [], [], []
    for _ in range(args.rounds):
        raw_run.append(timed(lambda: sh("docker", "run", "--rm", IMAGE, "python3", "-c", "pass")))
        raw_print.append(timed(lambda: sh("docker", "run", "--rm", IMAGE, "python3", "-c", "print(1)")))
        name = f"bench-{uuid.uuid4().hex[:8]}"
        t0 = time.perf_counter()
        status, body = api.call("POST", "/session", {"name": name, "image": "python"})
        created.append(time.perf_counter() - t0)
        assert status == 201 and body["status"] == "RUNNING", body
        api.call("DELETE", f"/session/{name}")
        t0 = time.perf_counter()
        out = sh(str(VENV_BIN / "backend.ai"), "run", "--rm", "-c", "print(1)", "python", env=full_env)
        cli.append(time.perf_counter() - t0)
        assert out == "1\n", out

    name = f"bench-{uuid.uuid4().hex[:8]}"
    status, body = api.call("POST", "/session", {"name": name, "image": "python"})
    assert status == 201, body
    try:
        container = sh("docker", "ps", "-q", "--filter", f"label=ai.backend.session-id={body['sessionId']}").strip()
        execs, dexec = [], []
        for _ in range(args.queries):
            t0 = time.perf_counter()
            st, res = fast.call("POST", f"/session/{name}", {"mode": "query", "code": "print(1)", "runId": None})
            execs.append(time.perf_counter() - t0)
            assert st == 200 and res["result"]["console"] == [["stdout", "1\n"]], res
        for _ in range(max(10, args.queries // 20)):
            dexec.append(timed(lambda: sh("docker", "exec", container, "python3", "-c", "print(1)")))
    finally:
        api.call("DELETE", f"/session/{name}")

    report = {
        "a_create_to_running": summary(created), "a_baseline_docker_run_pass": summary(raw_run),
        "b_cli_run_rm": summary(cli), "b_baseline_docker_run_print": summary(raw_print),
        "c_execute_rest": summary(execs), "c_baseline_docker_exec": summary(dexec),
    }
    ratio_a = report["a_create_to_running"]["median"] / report["a_baseline_docker_run_pass"]["median"]
    ratio_b = report["b_cli_run_rm"]["median"] / report["b_baseline_docker_run_print"]["median"]
    ratio_c = report["c_execute_rest"]["median"] / report["c_baseline_docker_exec"]["median"]
    if args.json:
        print(json.dumps({**report, "ratios": {"a": ratio_a, "b": ratio_b, "c": ratio_c}}, indent=2))
        return
    def row(label: str, key: str) -> None:
        s = report[key]
        print(f"  {label:<44} median {s['median']*1000:8.1f} ms   min {s['min']*1000:7.1f}   "
              f"p90 {s['p90']*1000:7.1f}   max {s['max']*1000:7.1f}   (n={s['n']})")
    print("(a) create-to-RUNNING")
    row("bai POST /session (blocking)", "a_create_to_running")
    row("raw: docker run --rm IMAGE python3 -c pass", "a_baseline_docker_run_pass")
    print(f"  ratio {ratio_a:.2f}x   (target <= 1.5x)")
    print("(b) backend.ai run --rm -c 'print(1)' python")
    row("bai CLI end to end", "b_cli_run_rm")
    row("raw: docker run --rm IMAGE python3 -c print(1)", "b_baseline_docker_run_print")
    print(f"  ratio {ratio_b:.2f}x   (target: median < 2000 ms)")
    print("(c) query-mode execute round trip")
    row("bai POST /session/{name} mode=query (keep-alive)", "c_execute_rest")
    row("raw: docker exec CONTAINER python3 -c print(1)", "c_baseline_docker_exec")
    print(f"  ratio {ratio_c:.3f}x   (target: median < 10 ms)")


if __name__ == "__main__":
    main()
