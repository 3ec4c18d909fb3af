#!/usr/bin/env bash
# driftgate side by side with its peers (MLServer, KServe, BentoML, a bare litestar app),
# using the shared harness in ../shared/bench-peers (read its README first).
#   bash bench/peers.sh [harness run.sh options]    e.g. --repeats 1 --duration 2 --only driftgate,mlserver
# Environments and outputs go to $BENCH_VENVS and $BENCH_OUT (default /tmp/bench-venvs, /tmp/bench-out).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PEERS="${PEERS:-$ROOT/../shared/bench-peers}"
export BENCH_VENVS="${BENCH_VENVS:-/tmp/bench-venvs}" BENCH_OUT="${BENCH_OUT:-/tmp/bench-out}"
REPO="${PEER_REPOSITORY:-/tmp/driftgate-peer-repository}"
PY="$ROOT/.venv/bin/python"

bash "$PEERS/setup.sh"
"$PY" "$ROOT/bench/peer_repository.py" --out "$REPO" --peers "$PEERS"
mkdir -p "$BENCH_OUT"
cat > "$BENCH_OUT/driftgate-server.json" <<JSON
[{"name": "driftgate", "venv": "", "cwd": "$ROOT",
  "cmd": ["$ROOT/.venv/bin/driftgate", "serve", "--repository", "$REPO", "--host", "127.0.0.1",
          "--port", "{port}", "--log-level", "warning"],
  "ready": "/v2/health/ready", "protocols": ["v1-records", "v2"]}]
JSON
EXTRA_SERVERS="$BENCH_OUT/driftgate-server.json" bash "$PEERS/run.sh" --ref mlserver "$@"
