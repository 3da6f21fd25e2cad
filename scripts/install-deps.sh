#!/usr/bin/env bash
# Installs everything xlmr-engine needs to build and test, from Debian's
# packages. Safe to run again: it installs only what is missing.
#   scripts/install-deps.sh             build + test dependencies
#   scripts/install-deps.sh --fixtures  also PyTorch & co. for scripts/make_fixtures.py
set -euo pipefail

packages=(cmake make g++ pkg-config libdnnl-dev libsentencepiece-dev sentencepiece catch2
          nlohmann-json3-dev libcli11-dev libzip-dev libxxhash-dev)
fixtures=0
if [[ "${1:-}" == "--fixtures" ]]; then
  fixtures=1
  packages+=(python3-torch python3-torchtext python3-sentencepiece libopenblas0 python3-venv python3-pip python3-matplotlib)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "install-deps: installing ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
fi

if ((fixtures)); then
  # Debian's torch 1.13 with a transformers release that still supports it.
  venv=/opt/xlmr-fixtures-venv
  if [[ ! -x $venv/bin/python ]]; then
    /usr/bin/python3 -m venv --system-site-packages "$venv"
  fi
  "$venv/bin/pip" install -q "transformers==4.38.2" safetensors
  # ONNX Runtime for scripts/compare_pytorch.py (optional there: skipped when missing)
  "$venv/bin/pip" install -q "onnxruntime==1.32.0" || echo "install-deps: onnxruntime not installed"
  # onnxruntime.quantization (compare_pytorch.py's ort-int8) needs onnx and
  # ml_dtypes; without --no-deps pip would replace Debian's numpy 1.24, which
  # its torch 1.13 is built against, by numpy 2.
  "$venv/bin/pip" install -q --no-deps "onnx==1.17.0" "ml_dtypes==0.4.1" ||
    echo "install-deps: onnx not installed (compare_pytorch.py skips ort-int8)"
  echo "install-deps: fixture tools in $venv (run scripts with $venv/bin/python)"
fi
