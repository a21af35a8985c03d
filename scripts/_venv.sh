# Sourced by scripts/*: make .venv (if missing) and install the project into it.
# Usage: . scripts/_venv.sh EXTRAS   (e.g. "test"; empty for none)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || { echo "error: clusterctl needs Python 3.11 or newer ($PYTHON is $("$PYTHON" -V 2>&1))" >&2; exit 1; }
  echo "creating .venv with $("$PYTHON" -V 2>&1)" >&2
  "$PYTHON" -m venv .venv
fi
VPY="$ROOT/.venv/bin/python"
extras="${1:-}"
spec="."; [ -n "$extras" ] && spec=".[$extras]"
# Reinstall only when pyproject.toml or the extras changed: a second run starts at once.
stamp=".venv/.clusterctl-installed"
want="$(sha256sum pyproject.toml | cut -c1-16) $extras"
if [ ! -f "$stamp" ] || ! grep -qxF "$want" "$stamp"; then
  echo "installing clusterctl${extras:+ with [$extras]} into .venv" >&2
  "$VPY" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  "$VPY" -m pip install --quiet --disable-pip-version-check -e "$spec" >&2
  echo "$want" > "$stamp"
fi
