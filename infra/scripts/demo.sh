#!/usr/bin/env bash
# The main job: set-up, start the real services and a worker, then stream an answer through Kafka and Triton.
# The stack keeps running afterwards; stop it with `.venv/bin/ragstream down`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bash infra/scripts/setup.sh
. .venv/bin/activate
ragstream up
ragstream up worker
ragstream demo "${@}"
echo "[demo] the stack is still running: 'ragstream status', 'ragstream down' (from $(pwd) with .venv active)" >&2
