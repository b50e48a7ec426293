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
run() { echo "+ sluice test $*" >&2; "$sluice" test --compact "$@" >/dev/null && echo "  ok" >&2; }
run "$out/inventory.wasm" --name inventory --event $ev/inventory-order-placed.event.json \
  --state $ev/inventory-order-placed.state.json --expect $ev/inventory-order-placed.expect.json
run "$out/inventory.wasm" --name inventory --event $ev/inventory-restock-then-orders.event.json \
  --expect $ev/inventory-restock-then-orders.expect.json
run "$out/greeter.wasm" --name greeter --event $ev/greeter-py-greeting-requested.event.json \
  --expect $ev/greeter-py-greeting-requested.expect.json
run "$out/greeter.wasm" --name greeter --event $ev/greeter-py-unsupported-language.event.json \
  --expect $ev/greeter-py-unsupported-language.expect.json

# The hostile fixture: print each outcome (no expectation; see README).
fx=guest-sdk/python/tests/fixtures/hostile
for kind in ok raise fatal retryable exit recurse recurse-deep loop alloc; do
  echo "+ hostile $kind" >&2
  "$sluice" test --compact --name hostile --limits '{"timeout_ms": 500}' --event "$fx/$kind.event.json" "$out/hostile.wasm" \
    | "$python" -c 'import json,sys; r=json.load(sys.stdin); o=r["outcome"]; m=o.get("message",""); print("  ", o["kind"], o.get("limit",""), repr(m[:300]), f"{r[\"elapsed_ms\"]:.0f} ms")' || true
done
