#!/usr/bin/env bash
# Builds the Python examples and the hostile fixture and runs them in the
# real runtime with `sluice test`, after the native unit tests.
#
#   guest-sdk/python/scripts/check.sh [SLUICE_BINARY]
#
# PYTHON: an interpreter with sluice_sdk and componentize-py installed
# (default: guest-sdk/python/.venv/bin/python if it exists, else python3).
# OUT: where components go (default: guest-sdk/python/build).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
repo="$(cd "$here/../.." && pwd)"
sluice="${1:-${SLUICE:-sluice}}"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$here/.venv/bin/python" ]]; then python="$here/.venv/bin/python"; else python=python3; fi
fi
out="${OUT:-$here/build}"
mkdir -p "$out"
cd "$repo"

"$python" -m pytest -q guest-sdk/python examples/inventory-py examples/greeter-py

"$python" -m sluice_sdk.build examples/inventory-py/inventory.py -o "$out/inventory.wasm"
"$python" -m sluice_sdk.build examples/greeter-py/greeter.py -o "$out/greeter.wasm"
"$python" -m sluice_sdk.build guest-sdk/python/tests/fixtures/hostile/hostile.py -o "$out/hostile.wasm"

ev=examples/events
run() {
  echo "+ sluice test $*" >&2
  local report
  report="$(mktemp)"
  if "$sluice" test --compact "$@" >"$report"; then rm -f "$report"; else cat "$report"; rm -f "$report"; return 1; fi
}
run "$out/inventory.wasm" --name inventory --event $ev/inventory-order-placed.event.json \
  --state $ev/inventory-order-placed.state.json --expect $ev/inventory-order-placed.expect.json
run "$out/inventory.wasm" --name inventory --event $ev/inventory-restock-then-orders.event.json \
  --expect $ev/inventory-restock-then-orders.expect.json
run "$out/greeter.wasm" --name greeter --event $ev/greeter-py-greeting-requested.event.json \
  --expect $ev/greeter-py-greeting-requested.expect.json
run "$out/greeter.wasm" --name greeter --event $ev/greeter-py-unsupported-language.event.json \
  --expect $ev/greeter-py-unsupported-language.expect.json

# The hostile fixture: each case against its expected outcome kind, under a
# 500 ms timeout and the default limits (64 MiB memory).
fx=guest-sdk/python/tests/fixtures/hostile
for kind in ok raise fatal retryable exit state bad-emit print recurse recurse-deep loop alloc; do
  run "$out/hostile.wasm" --name hostile --limits '{"timeout_ms": 500}' \
    --event "$fx/$kind.event.json" --expect "$fx/$kind.expect.json"
done
echo "all checks passed" >&2
