#!/usr/bin/env bash
# Prepare the peer comparison (bench/peers.sh runs this first; it is idempotent):
#   - one virtual environment per peer under $PEERS_HOME/venvs/<peer>, installed from the
#     pinned lock file requirements/<peer>.txt (reinstalled when the lock file changes);
#   - the benchmark's ONNX models and request rows under $PEERS_HOME/models, made by
#     make_models.py in the "models" environment (scikit-learn's bundled data, no download).
# wrk and taskset come from Debian (apt-get install wrk util-linux).
#
#   bash bench/peers/setup.sh                    # every environment
#   bash bench/peers/setup.sh mlserver litestar  # some (the models environment is always made)
#   bash bench/peers/setup.sh --lock kserve      # re-resolve requirements/kserve.txt from kserve.in
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PEERS_HOME="${PEERS_HOME:-/tmp/driftgate-peers}"
VENVS="$PEERS_HOME/venvs"
PYTHON="${PYTHON:-python3}"
mkdir -p "$VENVS"

lock=0
if [ "${1:-}" = "--lock" ]; then lock=1; shift; fi
peers=("$@")
if [ ${#peers[@]} -eq 0 ]; then
  for f in "$HERE"/requirements/*.in; do peers+=("$(basename "$f" .in)"); done
fi

if [ $lock = 1 ]; then
  for p in "${peers[@]}"; do
    tmp="$(mktemp -d)"
    "$PYTHON" -m venv "$tmp/venv"
    "$tmp/venv/bin/pip" install -q --disable-pip-version-check -r "$HERE/requirements/$p.in"
    { echo "# $p: the full pinned environment, from $p.in (bash bench/peers/setup.sh --lock $p)"
      "$tmp/venv/bin/pip" freeze --disable-pip-version-check; } > "$HERE/requirements/$p.txt"
    rm -rf "$tmp"
    echo "requirements/$p.txt: $(grep -vc '^#' "$HERE/requirements/$p.txt") pinned packages"
  done
  exit 0
fi

make_env() {  # make_env NAME: the environment of requirements/NAME.txt, unless it is already that
  local name="$1" lockfile="$HERE/requirements/$1.txt" dir="$VENVS/$1"
  if [ -x "$dir/bin/python" ] && cmp -s "$lockfile" "$dir/installed.txt"; then
    echo "  $name: up to date"; return 0
  fi
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir"
  if ! "$dir/bin/pip" install -q --disable-pip-version-check -r "$lockfile" >"$VENVS/$name.log" 2>&1; then
    echo "  $name: FAILED (see $VENVS/$name.log)"; return 1
  fi
  cp "$lockfile" "$dir/installed.txt"
  echo "  $name: installed ($(grep -vc '^#' "$lockfile") packages)"
}

echo "environments in $VENVS:"
case " ${peers[*]} " in *" models "*) ;; *) peers+=(models) ;; esac
pids=()
for p in "${peers[@]}"; do make_env "$p" & pids+=($!); done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
[ $failed = 0 ] || { echo "an environment failed to install"; exit 1; }

if [ ! -f "$PEERS_HOME/models/payload.json" ]; then
  "$VENVS/models/bin/python" "$HERE/make_models.py" --out "$PEERS_HOME/models"
fi
command -v wrk >/dev/null && command -v taskset >/dev/null || echo "note: the comparison needs wrk and taskset (apt-get install wrk util-linux)"
