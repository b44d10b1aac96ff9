#!/bin/bash
# The README's test command: make sure this machine's all-in-one node is installed and running
# (idempotent; a no-op when it is), then lint and run the whole suite against real PostgreSQL,
# Redis, etcd and Docker.
set -euo pipefail
cd "$(dirname "$0")/.."
bash installer/bootstrap.sh
VENV=/opt/bai/venv
"$VENV/bin/ruff" check components installer roles tests bench
"$VENV/bin/mypy" --no-error-summary components/bai
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests "$@"
