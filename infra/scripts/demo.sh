#!/usr/bin/env bash
# The main job: set-up, the real services, a worker and a WebSocket bridge; index the part of the Python 3.11
# documentation the question needs, stream a cited answer over the WebSocket bridge, answer a paraphrase from the
# semantic cache with `ragstream ask`, then index the rest of the documentation (progress every few seconds).
# The stack keeps running afterwards; stop it with `.venv/bin/ragstream down`.
#
#   DEMO_QUICK=1   the first part only (CI runs this: a small corpus, one cited answer, one cache hit)
#   DEMO_DOCS=DIR  another documentation folder (indexed whole, then asked about)
#   DEMO_MODEL=M   the model that answers (default llm_large: Qwen2.5-0.5B cites its sources better than SmolLM2)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bash infra/scripts/setup.sh
. .venv/bin/activate

say() { printf '[demo] %s\n' "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

question=${1:-"How do I convert a string to a number in Python?"}
paraphrase=${question/How do I/How can I}
model=${DEMO_MODEL:-llm_large}
docs=${DEMO_DOCS:-/usr/share/doc/python3.11/html}
quick=${DEMO_QUICK:-0}
# What the default question needs: the FAQ (it answers it), plus, outside the quick form, the tutorial and the
# built-in functions and types. Doc ids are relative to the docs folder, so the rest later gets the same ids.
first=("$docs/faq")
[ "$quick" = 1 ] || first+=("$docs/tutorial" "$docs/library/functions.html" "$docs/library/stdtypes.html")
for path in "${first[@]}"; do [ -e "$path" ] || first=("$docs"); done

ragstream up
ragstream up worker bridge
say "indexing ${#first[@]} part(s) of $docs through Kafka (unchanged files are skipped)"
ragstream ingest "${first[@]}" --root "$docs" --tenant default --prefix python-docs/

port=$(python -c 'from infra.settings import Settings; print(Settings.from_env().bridge_port)')
say "asking over the WebSocket bridge: $question"
# A copy of the streamed answer goes to a file (tee to an inherited descriptor: `tee /dev/stderr` reopens the log file
# a caller redirected stderr to, truncating it and leaving a run of NUL bytes in it).
answer=$(mktemp)
python -m streams.examples.ws_client "$question" --url "ws://127.0.0.1:$port" --model "$model" | tee "$answer" >&2 \
  || fail "no answer over the WebSocket bridge"
grep -q '^\[[0-9]' "$answer" || fail "the answer cites no source"
rm -f "$answer"

say "asking a paraphrase over Kafka (ragstream ask): it comes from the semantic cache"
status=$(mktemp)
ragstream ask "$paraphrase" --model "$model" 2>"$status" || { cat "$status" >&2; fail "ragstream ask failed"; }
cat "$status" >&2
grep -q '; cache;' "$status" || fail "the paraphrase was not answered from the cache"
rm -f "$status"

if [ "$quick" != 1 ] && [ "${first[*]}" != "$docs" ]; then
  say "indexing the rest of $docs (a few minutes the first time; Ctrl-C stops it, a re-run continues)"
  ragstream ingest "$docs" --root "$docs" --tenant default --prefix python-docs/
fi
say "done. The stack is still running: 'ragstream status', 'ragstream ask \"...\"', 'ragstream down' (from $(pwd) with .venv active)"
