# Sourced by scripts/run, scripts/test and scripts/bench: make sure .venv exists and holds
# the project as pyproject.toml says, reinstalling only when pyproject.toml changed.
# shellcheck shell=bash
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${CLEARWALL_PYTHON:-python3}"
VENV="${CLEARWALL_VENV:-$ROOT/.venv}"
EXTRAS="${1:-}"

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "clearwall: creating $VENV with $($PYTHON --version 2>&1)" >&2
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip >&2
  fi
  local want stamp="$VENV/.clearwall-installed"
  want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)-${EXTRAS}"
  if [ ! -f "$stamp" ] || ! grep -qx -- "$want" "$stamp"; then
    echo "clearwall: installing clearwall${EXTRAS:+[$EXTRAS]} into $VENV" >&2
    "$VENV/bin/pip" install -q -e "$ROOT${EXTRAS:+[$EXTRAS]}" >&2
    echo "$want" >"$stamp"
  fi
}
