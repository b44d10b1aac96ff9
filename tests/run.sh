#!/bin/bash
# The README's test command: make sure this machine's all-in-one node is installed and running
# (idempotent; a no-op when it is), then lint and run the whole suite against real PostgreSQL,
# Redis, etcd and Docker.
set -euo pipefail
cd "$(dirname "$0")/.."
bash installer/bootstrap.sh
VENV=/opt/bai/venv
# Test-only tools, unpacked from Debian's packages into a cache rather than installed (their
# packages would start services): docker-registry for the registry and image-pull tests.
TOOLS=/var/cache/bai/test-tools
if ! command -v docker-registry >/dev/null && [ ! -x "$TOOLS/usr/bin/docker-registry" ]; then
  dl=$(mktemp -d)
  (cd "$dl" && apt-get download -q docker-registry 2>/dev/null && mkdir -p "$TOOLS" \
     && dpkg-deb -x docker-registry_*.deb "$TOOLS")
  rm -rf "$dl"
fi
# Debian's chromium for the app proxy's browser tests (Playwright drives it through
# executable_path; no browser is downloaded).
if ! command -v chromium >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null
fi
"$VENV/bin/ruff" check components installer roles tests bench stack
"$VENV/bin/mypy" --no-error-summary components/bai
# the slowest tests, for keeping CI inside its budget
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider --durations=40 --durations-min=15 tests "$@"
