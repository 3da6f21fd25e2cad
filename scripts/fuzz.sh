#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz, clang with ASan + UBSan) in
# build-fuzz and runs each one for a while; see docs/robustness.md.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# TARGET is one of: xlmr safetensors torch tokenizer spm_model tokenizer_json (default: all).
# FUZZ_JOBS=N runs N targets at once (default 1). Crashing inputs land in
# build-fuzz/crashes/<target>/; the corpora grow in build-fuzz/corpus/<target>/.
# Exits non-zero when any target found a crash, leak, timeout or OOM.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
[[ $seconds =~ ^[0-9]+$ ]] || { echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2; }
shift || true
all=(xlmr safetensors torch tokenizer spm_model tokenizer_json)
targets=("$@")
((${#targets[@]})) || targets=("${all[@]}")
for t in "${targets[@]}"; do
  [[ " ${all[*]} " == *" $t "* ]] || { echo "fuzz.sh: unknown target '$t' (known: ${all[*]})" >&2; exit 2; }
done
jobs=${FUZZ_JOBS:-1}
build=build-fuzz

# ---- toolchain: the library's dependencies, then clang and libFuzzer -------
scripts/install-deps.sh
missing=()
for p in clang libclang-rt-14-dev libomp-dev llvm; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "fuzz.sh: installing ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
fi

# -O1 with assertions on: fast enough to fuzz, and library asserts still fire.
CC=clang CXX=clang++ cmake -S . -B "$build" -DXLMR_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_C_FLAGS_DEBUG="-O1 -g" -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" \
  -DXLMR_CUDA=OFF -DXLMR_ONEDNN=OFF -DXLMR_TESTS=OFF -DXLMR_BENCHMARKS=OFF -DXLMR_DEMO=OFF >/dev/null
cmake --build "$build" -j "$(nproc)" --target xlmr-fuzz-seeds "${targets[@]/#/fuzz_}"

# ---- seed corpora (copied at run time; the inputs libFuzzer adds stay) -----
corpus=$build/corpus
seeds=$build/seeds
mkdir -p "$seeds" "$build/crashes" "$build/logs"
for t in "${targets[@]}"; do mkdir -p "$corpus/$t" "$build/crashes/$t"; done
add() {  # add TARGET FILE...: copy into the corpus when present
  local t=$1; shift
  for f in "$@"; do [[ -f $f ]] && cp -n "$f" "$corpus/$t/" 2>/dev/null || true; done
}
# A small SentencePiece model: the demo one (250 kB) is too large to mutate.
tiny_spm=$seeds/tiny.model
if [[ ! -f $tiny_spm ]] && command -v spm_train >/dev/null; then
  LC_ALL=C grep -a -E '^[ -~]+$' scripts/demo/corpus.txt > "$seeds/ascii.txt" || true
  spm_train --input="$seeds/ascii.txt" --model_prefix="$seeds/tiny" --vocab_size=100 --model_type=unigram \
    --normalization_rule_name=identity --minloglevel=2 >/dev/null 2>&1 || rm -f "$tiny_spm"
fi
for t in "${targets[@]}"; do
  case $t in
    xlmr)
      if [[ -f $tiny_spm ]]; then "$build/xlmr-fuzz-seeds" "$corpus/xlmr" "$tiny_spm"
      else "$build/xlmr-fuzz-seeds" "$corpus/xlmr"; fi ;;
    safetensors) add safetensors tests/fixtures/readers/*.safetensors ;;
    torch) add torch tests/fixtures/readers/*.pt tests/fixtures/hostile/*.pt ;;
    tokenizer)
      # First byte: mode and max_length (see run_tokenizer in fuzz_entry.cpp).
      i=0
      while IFS= read -r line; do
        printf "\\x$(printf %02x $(( (i * 37) % 256 )))%s" "$line" > "$corpus/tokenizer/seed_$i"
        i=$((i + 1))
      done < <(head -n 40 scripts/demo/input.txt; grep -a -o '"text": *"[^"]*"' tests/fixtures/tokenizer/demo_cases.json | head -n 40 | sed 's/^"text": *"//; s/"$//')
      ;;
    spm_model) add spm_model "$tiny_spm" ;;
    tokenizer_json)
      # The demo tokenizer.json cut down to 60 pieces without its 300 kB
      # charsmap, in today's layout and the older one.
      python3 - "$corpus/tokenizer_json" <<'PY'
import json, sys
j = json.load(open("tests/fixtures/tokenizer/demo_tokenizer.json", encoding="utf-8"))
j["model"]["vocab"] = j["model"]["vocab"][:60] + [j["model"]["vocab"][-1]]
j["normalizer"]["normalizers"][0]["precompiled_charsmap"] = ""
open(sys.argv[1] + "/seed_current.json", "w").write(json.dumps(j))
j["normalizer"] = j["normalizer"]["normalizers"][0]
j["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
    {"type": "WhitespaceSplit"}, {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True}]}
open(sys.argv[1] + "/seed_older.json", "w").write(json.dumps(j))
PY
      ;;
  esac
  add "$t" tests/fixtures/fuzz-regressions/"$t"/*
done

# ---- run -------------------------------------------------------------------
max_len() {
  case $1 in
    xlmr) echo 16384 ;;
    torch | spm_model | tokenizer_json) echo 8192 ;;
    *) echo 4096 ;;
  esac
}
run_one() {
  local t=$1 dict=()
  [[ -f tests/fuzz/$t.dict ]] && dict=(-dict="tests/fuzz/$t.dict")
  touch "$build/logs/$t.start"
  set +e
  "$build/fuzz_$t" "$corpus/$t" "${dict[@]}" -max_total_time="$seconds" -max_len="$(max_len "$t")" \
    -timeout=20 -rss_limit_mb=2560 -print_final_stats=1 -artifact_prefix="$build/crashes/$t/" \
    >"$build/logs/$t.log" 2>&1
  echo $? >"$build/logs/$t.rc"
  set -e
}
echo "fuzz.sh: ${#targets[@]} target(s), ${seconds}s each, $jobs at a time; logs in $build/logs/"
running=0
for t in "${targets[@]}"; do
  run_one "$t" &
  running=$((running + 1))
  if ((running >= jobs)); then wait -n || true; running=$((running - 1)); fi
done
wait || true

# ---- summary -----------------------------------------------------------------
failed=0
printf '%-12s %6s %12s %8s %8s  %s\n' target rc execs corpus crashes result
for t in "${targets[@]}"; do
  rc=$(cat "$build/logs/$t.rc" 2>/dev/null || echo "?")
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$build/logs/$t.log" | grep -o '[0-9]*$' | tail -1)
  new=$(find "$build/crashes/$t" -type f -newer "$build/logs/$t.start" | wc -l)
  size=$(find "$corpus/$t" -type f | wc -l)
  result=ok
  if [[ $rc != 0 || $new != 0 ]]; then
    result="FAILED (see $build/logs/$t.log, $build/crashes/$t/)"
    failed=1
  fi
  printf '%-12s %6s %12s %8s %8s  %s\n' "$t" "$rc" "${execs:-?}" "$size" "$new" "$result"
done
exit $failed
