#!/usr/bin/env bash
# driftgate side by side with its peers (MLServer, KServe, BentoML, a bare litestar app, a bare
# ASGI app), from a clone alone: bench/peers/setup.sh makes the peers' pinned environments and
# the models, bench/peer_repository.py driftgate's repository of those models, and
# bench/peers/compare.py runs and times them (its options pass through; see bench/README.md).
#   bash bench/peers.sh                                         # driftgate, mlserver, litestar-uvicorn, hello-uvicorn
#   bash bench/peers.sh --only driftgate,mlserver --rounds 1 --duration 2
# Environments, models and results go to $PEERS_HOME (default /tmp/driftgate-peers).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export PEERS_HOME="${PEERS_HOME:-/tmp/driftgate-peers}"
PY="${PY:-$ROOT/.venv/bin/python}"

read -r -a envs <<<"$("$PY" "$ROOT/bench/peers/compare.py" --print-envs "$@")"
bash "$ROOT/bench/peers/setup.sh" "${envs[@]}"
"$PY" "$ROOT/bench/peer_repository.py"
exec "$PY" "$ROOT/bench/peers/compare.py" "$@"
