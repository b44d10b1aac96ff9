#!/bin/bash
# Create (once) the test-only virtual environment that runs the molecule scenarios:
# molecule + its docker driver + ansible (its docker collection comes with the `ansible`
# package; with ansible-core alone `molecule create` tries to download it and fails offline)
# + pytest-testinfra for the verify step. Kept apart from /opt/bai/venv on purpose (~600 MB).
#
#   bash molecule/setup-venv.sh [VENV]      (default /var/cache/bai/molecule-venv); prints VENV
set -euo pipefail
venv=${1:-/var/cache/bai/molecule-venv}
want="molecule>=25,<27 molecule-plugins[docker]>=23,<26 ansible>=11,<13 pytest-testinfra>=10,<11"
stamp="$venv/.bai-molecule"
if [ -x "$venv/bin/molecule" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$venv"; exit 0
fi
rm -rf "$venv"
/usr/bin/python3 -m venv "$venv"
log=$(mktemp)
set -f  # the [docker] extra is no glob
# shellcheck disable=SC2086
if ! "$venv/bin/pip" install -q --disable-pip-version-check $want >"$log" 2>&1; then
  tail -n 30 "$log" >&2; rm -f "$log"; exit 1
fi
rm -f "$log"
printf '%s' "$want" > "$stamp"
echo "$venv"
