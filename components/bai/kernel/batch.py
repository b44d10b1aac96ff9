"""A batch session's startup command, run by the runner (stdlib only).

The command runs once, through ``/bin/sh -c``, in ``/home/work`` (the container's working
directory when that is missing), as the container's user, with the environment user code gets.
Its stdout and stderr are the runner's own, i.e. the container log: that is where the original
keeps a batch task's output, and what ``session logs`` reads (also after the session ended).

Its end is watched through a pidfd registered in the runner's selector, so the runner learns the
exit status at once without a SIGCHLD handler or a polling loop. The result is held until the
agent acknowledges it (``batch-ack``): one that finishes while the agent restarts is sent again
on the next connection.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

WORK_DIR = "/home/work"


class BatchTask:
    """The startup command's process, and its exit status once it is known."""

    def __init__(self, command: str, env: dict[str, str]) -> None:
        cwd = WORK_DIR if os.path.isdir(WORK_DIR) else None
        self.proc = subprocess.Popen(
            ["/bin/sh", "-c", command], stdin=subprocess.DEVNULL, cwd=cwd, env=env,
            # Its own process group, so that nothing the runner does to user code's group hits it.
            start_new_session=True,
        )
        self.exit_code: int | None = None
        #: Set to False once the agent has acknowledged the result.
        self.unreported = True
        try:
            self.pidfd: int | None = os.pidfd_open(self.proc.pid)
        except (AttributeError, OSError):  # kernels older than 5.3: the runner polls instead
            self.pidfd = None

    def poll(self) -> bool:
        """Collect the exit status if the process has ended; True once it has."""
        if self.exit_code is not None:
            return True
        rc = self.proc.poll()
        if rc is None:
            return False
        # Shell convention: killed by signal N -> 128 + N.
        self.exit_code = 128 - rc if rc < 0 else rc
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        return True

    def result_record(self) -> dict[str, Any]:
        return {"type": "batch-finished", "data": {"exitCode": self.exit_code}}
