#!/usr/bin/env bash
# Sluice quickstart: builds the example handlers and the host, starts the
# host on the embedded store (SQLite under ./.sluice) with the example
# handlers deployed, and feeds it a stream of orders and payments for a
# minute. Stop it with Ctrl-C. Run from anywhere; it works in the repo root.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== installing the wasm32-wasip2 target (if missing) and building"
rustup target add wasm32-wasip2
cargo build --release --target wasm32-wasip2 -p inventory -p notifier -p payments
cargo build --release -p sluice-cli
SLUICE=target/release/sluice
URL=${SLUICE_URL:-http://127.0.0.1:8080}
export SLUICE_URL=$URL

producer() {
  # Wait for the host's admin API.
  for _ in $(seq 1 100); do
    curl -sf "$URL/healthz" >/dev/null 2>&1 && break
    sleep 0.2
  done
  for sku in sku-1 sku-2 sku-3; do
    $SLUICE publish stock --type stock.received --key "$sku" --data "{\"sku\":\"$sku\",\"quantity\":5}" >/dev/null
  done
  for i in $(seq 1 60); do
    sku="sku-$(( i % 3 + 1 ))"
    $SLUICE publish orders --type order.placed --key "$sku" --id "order-$i" \
      --data "{\"order_id\":\"order-$i\",\"sku\":\"$sku\",\"qty\":1,\"email\":\"customer$i@example.com\"}" >/dev/null
    case $(( i % 10 )) in
      3) card=flaky ;;   # fails twice, then succeeds: retries
      7) card=stolen ;;  # fatal: straight to the DLQ
      *) card=ok ;;
    esac
    $SLUICE publish payment-requests --type payment.requested --key "order-$i" \
      --data "{\"order_id\":\"order-$i\",\"amount_cents\":$(( 1000 + i )),\"card\":\"$card\"}" >/dev/null
    sleep 1
  done
  echo "== producer done: 60 orders published"
} 

producer &
PRODUCER=$!
trap 'kill $PRODUCER 2>/dev/null || true' EXIT

cat <<EOT
== starting the host; in another terminal, look around:
   curl -s $URL/v1/topics
   curl -s "$URL/v1/topics/inventory/events?limit=5"
   curl -s "$URL/v1/topics/notifications/events?limit=5"
   curl -s $URL/v1/handlers
   curl -s $URL/v1/dlq
   curl -s $URL/v1/handlers/inventory/state/sku-1
   $SLUICE publish orders --type order.placed --key sku-1 --data '{"order_id":"x1","sku":"sku-1","qty":1}'
EOT
SLUICE_LOG=${SLUICE_LOG:-info,sluice::pipeline::dispatcher=debug,sluice::guest=debug} \
  "$SLUICE" run --config examples/sluice.toml
