#!/usr/bin/env bash
# Load test of xlmr-infer's streaming: generates N lines of mixed text
# (deterministic: empty lines, several scripts and emoji, short, medium and
# long lines - the long ones are truncated), runs xlmr-infer over N/10 and
# over N lines, and checks that
#   - the output has exactly one record per line, indices 0..N-1 in order;
#   - the peak RSS of the long run is within --rss-slack-mib of the short
#     run's (memory must not grow with the input).
# Prints a summary line per run. Exit 0 when every check passes.
#
#   scripts/load_test.sh [--lines N] [--build DIR] [--model M.xlmr] [--rss-slack-mib X] [-- xlmr-infer args...]
#
# Defaults: 100000 lines, build/ (xlmr-infer and demo.xlmr from there), 8 MiB.
# Example: scripts/load_test.sh --lines 20000 -- --threads 1
set -euo pipefail
cd "$(dirname "$0")/.."

lines=100000
build=build
model=
slack_mib=8
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --lines) lines="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --rss-slack-mib) slack_mib="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "load_test.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
infer="$build/xlmr-infer"
[ -n "$model" ] || model="$build/demo.xlmr"
[ -x "$infer" ] || { echo "load_test.sh: no $infer (build the xlmr-infer target)" >&2; exit 2; }
[ -f "$model" ] || { echo "load_test.sh: no $model (build the demo-model target)" >&2; exit 2; }
[ "$lines" -ge 10 ] || { echo "load_test.sh: --lines must be >= 10" >&2; exit 2; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/xlmr-load.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Park-Miller generator: every product stays below 2^53, so any awk gives the
# same text.
gen() {
  awk -v n="$1" 'BEGIN {
    x = 20240601
    nw = split("the morning was cool and sky over harbour turned pale blue " \
               "wandern wir durch den Wald Suppe Straße Größe " \
               "le train de nuit arrive à Lyon avant lever du soleil café naïve " \
               "mercado abre temprano pan fruta queso " \
               "сегодня в городе тепло и солнечно " \
               "今天的天气很好 我们去公园散步 東京の夏はとても暑いです " \
               "الطقس جميل اليوم في المدينة מחר נבשל מרק " \
               "आज बारिश के बाद मौसम ठंडा है 😀 🚀 ✓ x 42 3.14", w, " ")
    for (i = 0; i < n; ++i) {
      x = (x * 16807) % 2147483647; r = x % 100
      if (r < 5) { print ""; continue }                 # empty line
      if (r < 80) len = 1 + x % 30                      # short
      else if (r < 95) len = 30 + x % 70                # medium
      else len = 300 + x % 300                          # long: truncated
      s = ""
      for (k = 0; k < len; ++k) {
        x = (x * 16807) % 2147483647
        s = s (k ? " " : "") w[1 + x % nw]
      }
      print s
    }
  }'
}

# Peak RSS in KiB of a command: GNU time when installed, else Python's getrusage.
peak_rss() {  # out_file rss_file cmd...
  local out="$1" rss="$2"; shift 2
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -f "%M" -o "$rss" "$@" > "$out"
  elif command -v python3 > /dev/null; then
    python3 - "$out" "$rss" "$@" <<'EOF'
import resource, subprocess, sys
with open(sys.argv[1], "wb") as out:
    rc = subprocess.call(sys.argv[3:], stdout=out)
with open(sys.argv[2], "w") as f:
    f.write("%d\n" % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(rc)
EOF
  else
    "$@" > "$out"
    echo 0 > "$rss"
  fi
}

run_one() {  # n -> sets sec, rss (KiB), bytes
  local n="$1"
  gen "$n" > "$tmp/in.txt"
  local t0 t1
  t0=$(date +%s.%N)
  if ! peak_rss "$tmp/out.jsonl" "$tmp/rss" "$infer" --model "$model" --progress never "${extra[@]}" \
      "$tmp/in.txt" 2> "$tmp/err"; then
    echo "load_test.sh: FAIL: xlmr-infer failed on $n lines:" >&2
    cat "$tmp/err" >&2
    exit 1
  fi
  t1=$(date +%s.%N)
  local got
  got=$(wc -l < "$tmp/out.jsonl")
  if [ "$got" -ne "$n" ]; then
    echo "load_test.sh: FAIL: $got records for $n lines" >&2
    exit 1
  fi
  # Each record starts {"index":I, : field 2 split on ':' and ','.
  if ! awk -F'[:,]' '$2 != NR - 1 { printf "record %d has index %s\n", NR - 1, $2; bad = 1; exit 1 }' \
      "$tmp/out.jsonl" >&2; then
    echo "load_test.sh: FAIL: records out of order" >&2
    exit 1
  fi
  if ! grep -q "truncated" "$tmp/err" && [[ " ${extra[*]} " != *" window "* ]]; then
    echo "load_test.sh: FAIL: no truncation warning although long lines were given" >&2
    exit 1
  fi
  bytes=$(wc -c < "$tmp/in.txt")
  rss=$(tail -n 1 "$tmp/rss")
  sec=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  rm -f "$tmp/out.jsonl" "$tmp/in.txt"
}

small=$((lines / 10))
run_one "$small"
s_sec=$sec s_rss=$rss s_bytes=$bytes
run_one "$lines"
l_sec=$sec l_rss=$rss l_bytes=$bytes
report() {  # n sec rss bytes
  awk -v n="$1" -v s="$2" -v r="$3" -v b="$4" \
    'BEGIN { printf "load_test.sh: %d lines (%.1f MiB) in %.2f s, %.0f lines/s, max RSS %.1f MiB\n", n, b / 1048576, s, n / s, r / 1024 }'
}
report "$small" "$s_sec" "$s_rss" "$s_bytes"
report "$lines" "$l_sec" "$l_rss" "$l_bytes"
if [ "$s_rss" -eq 0 ] || [ "$l_rss" -eq 0 ]; then
  echo "load_test.sh: peak RSS not measurable here (no /usr/bin/time, no python3); order and count OK"
  exit 0
fi
growth=$((l_rss - s_rss))
if [ "$growth" -gt $((slack_mib * 1024)) ]; then
  echo "load_test.sh: FAIL: peak RSS grew by $((growth / 1024)) MiB from $small to $lines lines (limit $slack_mib MiB)" >&2
  exit 1
fi
echo "load_test.sh: OK: $lines records in order; peak RSS grew by $growth KiB from $small to $lines lines (limit $slack_mib MiB)"
