#!/usr/bin/env bash
# The main job: set-up, the real services, a worker and a WebSocket bridge; ingest the Python 3.11 documentation
# through Kafka; then stream a cited answer over the WebSocket bridge and again with `ragstream ask` (a cache hit).
# The stack keeps running afterwards; stop it with `.venv/bin/ragstream down`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bash infra/scripts/setup.sh
. .venv/bin/activate

question=${1:-"How do I convert a string to a number in Python?"}
docs=/usr/share/doc/python3.11/html

ragstream up
ragstream up worker bridge
echo "[demo] ingesting the Python documentation ($docs) through Kafka; unchanged files are skipped" >&2
ragstream ingest "$docs" --tenant default --prefix python-docs/

port=$(python -c 'from infra.settings import Settings; print(Settings.from_env().bridge_port)')
echo "[demo] asking over the WebSocket bridge: $question" >&2
python -m streams.examples.ws_client "$question" --url "ws://127.0.0.1:$port"
echo "[demo] asking again over Kafka (ragstream ask): a paraphrase-tolerant cache hit" >&2
ragstream ask "$question"
echo "[demo] the stack is still running: 'ragstream status', 'ragstream down' (from $(pwd) with .venv active)" >&2
