#!/bin/bash
# Install and start an all-in-one bai node on this machine (Debian 12, as root):
#
#   bash installer/bootstrap.sh [bai-install install options, e.g. --dry-run or --json]
#
# 1. apt-get installs what creating the venv needs (only what is missing);
# 2. creates /opt/bai/venv with /usr/bin/python3 (if missing);
# 3. pip install -e "<this checkout>[test]" (skipped when pyproject.toml is unchanged since the
#    last successful install into that venv);
# 4. execs `bai-install install --non-interactive "$@"`, which installs PostgreSQL, Redis, etcd,
#    Docker, the kernel image, the manager and the agent, and starts them.
# Rerunning it is safe: a converged node reports "nothing changed".
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${BAI_VENV:-/opt/bai/venv}
say() { printf 'bootstrap: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  say "run me as root (the installer writes /etc, installs packages and starts services)"
  exit 1
fi
if ! grep -qs '^VERSION_CODENAME=bookworm' /etc/os-release; then
  say "warning: made for Debian 12 (bookworm); continuing anyway"
fi

need=(python3 python3-venv python3-dev gcc ca-certificates)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -qx 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
else
  say "prerequisites present"
fi

if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv"
  mkdir -p "$(dirname "$venv")"
  /usr/bin/python3 -m venv "$venv"
fi

# Reinstall only when the package metadata changed or the venv points at another checkout;
# code changes need nothing (editable install).
stamp="$venv/.bai-bootstrap"
want="$(sha256sum "$repo/pyproject.toml" | cut -d' ' -f1) $repo"
if [ -x "$venv/bin/bai-install" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  say "venv up to date ($venv)"
else
  say "installing bai into $venv (pip install -e $repo[test])"
  log=$(mktemp /tmp/bai-bootstrap-pip.XXXXXX.log)
  if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$repo[test]" \
      >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    say "pip install failed (full log: $log)"
    exit 1
  fi
  rm -f "$log"
  printf '%s\n' "$want" > "$stamp"
fi

cd "$repo"
exec "$venv/bin/bai-install" install --non-interactive "$@"
