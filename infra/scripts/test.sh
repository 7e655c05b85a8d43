#!/usr/bin/env bash
# The test command: set-up, static checks, then the whole test suite against real services that the tests start.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
bash infra/scripts/setup.sh
. .venv/bin/activate
echo "[test] ruff" >&2
ruff check .
ruff format --check .
echo "[test] mypy" >&2
mypy
echo "[test] pytest" >&2
exec python -m pytest -q -ra -p no:cacheprovider "$@"
