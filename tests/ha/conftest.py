"""The HA half-stack scenario on Docker-capable systemd test hosts (tests/fixtures/testhosts.py)."""

from tests.fixtures.testhosts import bai_host_image, test_hosts  # noqa: F401 (fixtures)
