"""What a registry rescan makes of an image's labels and name (pure functions of services/images)."""

from __future__ import annotations

import pytest

from bai.common.docker_registry import ScannedImage
from bai.manager.services import images
from bai.manager.store.images import ScannedRow

KERNEL_LABELS = {"ai.backend.kernelspec": "1", "ai.backend.resource.min.cpu": "1",
                 "ai.backend.resource.min.mem": "256m", "ai.backend.service-ports": ""}


@pytest.mark.parametrize(("raw", "ok"), [
    ("", True),
    ("jupyter:http:8081", True),
    ("jupyter:http:8081,tb:http:[6006,6007],term:pty:9000", True),
    ("vscode:preopen:8180,ssh:tcp:8022", True),
    ("x:udp:8000", False),  # unknown protocol
    ("x:http:80", False),  # privileged port
    ("x:http:2000", False),  # reserved for the runner
    ("a:http:8081,b:tcp:8081", False),  # duplicate
    ("bad name:http:8081", False),
    ("x:http:70000", False),
])
def test_service_ports_validated_as_the_original(raw: str, ok: bool) -> None:
    assert images.valid_service_ports(raw) is ok


def test_resource_limits_from_labels() -> None:
    labels = {**KERNEL_LABELS, "ai.backend.resource.max.mem": "4g", "ai.backend.resource.min.cuda.device": "1"}
    assert images.resource_limits(labels) == [
        {"key": "cpu", "min": "1", "max": "Infinity"},
        {"key": "cuda.device", "min": "1", "max": "Infinity"},
        {"key": "mem", "min": str(256 * 2**20), "max": str(4 * 2**30)},
    ]
    assert images.resource_limits({"ai.backend.resource.min.mem": "lots"}) == [
        {"key": "mem", "min": "0", "max": "Infinity"}]


@pytest.mark.parametrize(("canonical", "registry", "name"), [
    ("bai.local/stable/python:3.11-debian12", "bai.local", "stable/python"),
    ("127.0.0.1:5000/bai-test/python:t1", "127.0.0.1:5000", "bai-test/python"),
    ("cr.backend.ai/stable/python", "cr.backend.ai", "stable/python"),
])
def test_repository_of(canonical: str, registry: str, name: str) -> None:
    assert images.repository_of(canonical, registry) == name


def test_scanned_rows() -> None:
    image = ScannedImage("stable/python", "3.11", "x86_64", "sha256:abc",
                         {**KERNEL_LABELS, "ai.backend.accelerators": "cuda"}, 1234)
    row = images.scanned_row("127.0.0.1:5000", image)
    assert row == ScannedRow(
        name="127.0.0.1:5000/stable/python:3.11", architecture="x86_64", registry="127.0.0.1:5000", tag="3.11",
        config_digest="sha256:abc", labels=image.labels, size_bytes=1234, accelerators="cuda",
        resources={"cpu": {"min": "1", "max": None}, "mem": {"min": str(256 * 2**20), "max": None}})
    not_kernel = ScannedImage("library/nginx", "1", "x86_64", "sha256:def", {}, 1)
    assert images.scanned_row("r", not_kernel) == "r/library/nginx:1: no ai.backend.kernelspec label"
    bad_ports = ScannedImage("x/y", "1", "x86_64", "sha256:0", {**KERNEL_LABELS,
                                                                "ai.backend.service-ports": "x:http:22"}, 1)
    assert images.scanned_row("r", bad_ports) == "r/x/y:1: invalid ai.backend.service-ports label"
