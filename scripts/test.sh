#!/usr/bin/env bash
# The README's test command (`npm test`): install what the integration tests need, build, run every
# tap test (unit + integration + VM), then print the summary as one plain line that any CI reader
# understands: "tests: N passed, N failed[, N skipped]" (tap's counts of assertions).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/ensure-deps.sh || exit 1
npm run -s build || exit 1

log=$(mktemp -t cstor-ts-tap.XXXXXX)
npx tap "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}

summary=$(grep -E '^# \{ total: [0-9]+' "$log" | tail -n 1)
rm -f "$log"
num() { sed -nE "s/.*[{ ,]$1: ([0-9]+).*/\1/p" <<<"$summary"; }
passed=$(num pass); failed=$(num fail); skipped=$(num skip); todo=$(num todo)
if [ -z "$summary" ]; then
  echo "tests: 0 passed, 1 failed (tap printed no summary)"
  exit "$((status == 0 ? 1 : status))"
fi
line="tests: ${passed:-0} passed, ${failed:-0} failed"
[ -n "$skipped$todo" ] && line="$line, $(( ${skipped:-0} + ${todo:-0} )) skipped"
echo
echo "$line"
exit "$status"
