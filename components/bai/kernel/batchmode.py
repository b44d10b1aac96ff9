"""Batch-mode execution (``mode=batch``): the clean, build and exec steps (stdlib only).

Runs in the user-code process (the child), so a batch run is queued, interrupted and restarted
like any query-mode run. Each step is a shell command run by ``/bin/sh -c`` in the work
directory, as the kernel's user, with the environment user code gets; its output goes straight to
the run's stdout/stderr pipes. As with the original:

* ``clean`` runs first, then ``build``, then ``exec``; ``clean-finished`` and ``build-finished``
  (``{"exitCode"}``) are always reported, in that order, even for a step that was skipped;
  the run ends with ``finished`` and the exit code of its last step.
* an empty or missing command skips its step (exit code 0); ``clean: "*"`` does nothing;
  ``build: "*"`` installs ``requirements.txt`` or ``setup.py`` when the work directory has one;
  ``exec: "*"`` runs ``main.py``.
* a step that fails (non-zero exit code) ends the run there: the later steps are skipped (their
  ``*-finished`` still reported with the same exit code) and ``finished`` carries that code.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

STEPS = (("clean", "clean-finished"), ("build", "build-finished"), ("exec", "finished"))


def _heuristic(step: str, work_dir: str) -> str | None:
    """The runtime's default command for ``*`` (None: nothing to do)."""
    python = shlex.quote(sys.executable)
    if step == "build":
        if os.path.isfile(os.path.join(work_dir, "requirements.txt")):
            return f"{python} -m pip install --user -r requirements.txt"
        if os.path.isfile(os.path.join(work_dir, "setup.py")):
            return f"{python} -m pip install --user ."
        return None
    if step == "exec":
        if os.path.isfile(os.path.join(work_dir, "main.py")):
            return f"{python} main.py"
        return "echo 'bai: cannot find the main script (\"main.py\")' >&2; exit 127"
    return None  # clean: "*" does nothing


def _run_step(command: str, work_dir: str) -> int:
    cwd = work_dir if os.path.isdir(work_dir) else None
    proc = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL, cwd=cwd)
    try:
        rc = proc.wait()
    except KeyboardInterrupt:
        # The interrupt went to our whole process group, the step's shell included.
        try:
            rc = proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        sys.stderr.write("KeyboardInterrupt\n")
        return 128 + signal.SIGINT if rc >= 0 else 128 - rc
    return 128 - rc if rc < 0 else rc


def run(options: dict[str, Any], work_dir: str, report: Callable[[str, int], None]) -> int:
    """Run the steps; ``report(status, exit code)`` for clean-finished and build-finished.
    Returns the exit code ``finished`` carries."""
    exit_code = 0
    reported: set[str] = set()
    try:
        for step, status in STEPS:
            command = options.get(step)
            if exit_code == 0 and isinstance(command, str) and command.strip():
                resolved = _heuristic(step, work_dir) if command.strip() == "*" else command
                if resolved is not None:
                    exit_code = _run_step(resolved, work_dir)
            if status != "finished":
                reported.add(status)
                report(status, exit_code)
    except KeyboardInterrupt:
        # Raised between steps (or by a report): the run still reports every status once.
        exit_code = exit_code or 128 + signal.SIGINT
        for _step, status in STEPS[:-1]:
            if status not in reported:
                report(status, exit_code)
    return exit_code
