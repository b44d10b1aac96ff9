"""The kernel image: its build label tracks the build script, and it carries the `work` user."""

from __future__ import annotations

import json
import subprocess

from roles.kernel_image import BUILD_LABEL, script_build_id


def test_image_is_built_by_the_current_script_with_the_work_user(kernel_image: str) -> None:
    info = json.loads(subprocess.run(["docker", "image", "inspect", kernel_image], capture_output=True,
                                     check=True, timeout=30).stdout)[0]
    # The role and the test fixture rebuild an image whose label differs from the script's hash.
    assert info["Config"]["Labels"][BUILD_LABEL] == script_build_id()
    probe = subprocess.run(
        ["docker", "run", "--rm", "--user", "1000:1000", "--network", "none", kernel_image, "sh", "-c",
         "id -un; id -gn; stat -c '%u:%g %a' /home/work; touch /home/work/x"],
        capture_output=True, text=True, check=True, timeout=60)
    assert probe.stdout.split("\n")[:3] == ["work", "work", "1000:1000 755"]
