#!/usr/bin/env bash
# The main job: set-up, the real services, a worker and a WebSocket bridge; ingest the Python 3.11 documentation
# through Kafka; then stream a cited answer over the WebSocket bridge and again with `ragstream ask` (a cache hit).
# The stack keeps running afterwards; stop it with `.venv/bin/ragstream down`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bash infra/scripts/setup.sh
. .venv/bin/activate

question=${1:-"How do I convert a string to a number in Python?"}
# Qwen2.5-0.5B answers from the sources far better than SmolLM2-135M, which the router picks for simple questions.
model=${DEMO_MODEL:-llm_large}
# The whole Python 3.11 documentation (~14k chunks; a few minutes the first time, seconds once unchanged).
docs=${DEMO_DOCS:-/usr/share/doc/python3.11/html}

ragstream up
ragstream up worker bridge
echo "[demo] ingesting the Python documentation ($docs) through Kafka; unchanged files are skipped" >&2
ragstream ingest "$docs" --tenant default --prefix python-docs/

port=$(python -c 'from infra.settings import Settings; print(Settings.from_env().bridge_port)')
echo "[demo] asking over the WebSocket bridge: $question" >&2
python -m streams.examples.ws_client "$question" --url "ws://127.0.0.1:$port" --model "$model"
echo "[demo] asking a paraphrase over Kafka (ragstream ask): answered from the semantic cache" >&2
ragstream ask "${question/How do I/How can I}" --model "$model"
echo "[demo] the stack is still running: 'ragstream status', 'ragstream down' (from $(pwd) with .venv active)" >&2
