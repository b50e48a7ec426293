#!/usr/bin/env bash
# The SQLite engine's floor for what the embedded pipeline writes per event,
# with no Sluice, no sqlx and no WASM: the sqlite3 shell runs the same schema
# (host/migrations/sqlite) and, per step of 1,000 events, the same two write
# transactions as `sluice bench --setup wasm`:
#   1. the append of 1,000 input events (rows in `events` and its indexes,
#      the partition heads);
#   2. the group commit of their 1,000 outcomes (processed records, one state
#      field per key, one emitted event each appended to `bench-out`, heads).
# Rows are generated inside SQLite (recursive CTEs), so no value crosses a
# driver: this is what the one writer cannot go below on this disk.
#
# Usage: scripts/sqlite-floor.sh [EVENTS] [KEYS] [SYNCHRONOUS] [STEP]
# (defaults: 100000 events, 1024 keys, FULL, 1000 events a transaction).
# Prints the wall time and the CPU time of the sqlite3 process per event.
# SLUICE_FLOOR_SQL, if set, runs after the migrations (for example
# "DROP INDEX events_id;", to see what an index costs).
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-100000}"
keys="${2:-1024}"
sync="${3:-FULL}"
step="${4:-1000}"
steps=$((events / step))
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
db="$dir/floor.db"

{ cat host/migrations/sqlite/*.sql; echo "${SLUICE_FLOOR_SQL:-}"; } | sqlite3 "$db"

{
  echo "PRAGMA journal_mode = WAL; PRAGMA synchronous = $sync; PRAGMA foreign_keys = ON; "
  echo "INSERT INTO topics VALUES ('bench', 4, 0), ('bench-out', 4, 0);"
  echo "INSERT INTO partition_heads VALUES ('bench',0,0),('bench',1,0),('bench',2,0),('bench',3,0),('bench-out',0,0),('bench-out',1,0),('bench-out',2,0),('bench-out',3,0);"
  for ((s = 0; s < steps; s++)); do
    from=$((s * step))
    cat <<SQL
BEGIN IMMEDIATE;
WITH RECURSIVE n(i) AS (SELECT $from UNION ALL SELECT i + 1 FROM n WHERE i < $from + $step - 1)
INSERT INTO events (topic, partition, "offset", id, source, type, time, content_type, data_schema, data, headers, key, appended_at)
SELECT 'bench', (i % $keys) % 4, i, 'b' || i, '/bench', 'step', NULL, 'application/json', NULL,
       CAST('{"n":' || i || '}' AS BLOB), '{}', 'k' || (i % $keys), CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) FROM n;
UPDATE partition_heads SET next_offset = next_offset + $step / 4 WHERE topic = 'bench';
COMMIT;
BEGIN IMMEDIATE;
WITH RECURSIVE n(i) AS (SELECT $from UNION ALL SELECT i + 1 FROM n WHERE i < $from + $step - 1)
INSERT INTO processed (handler, event_id, topic, seq, outcome, version, attempts, processed_at)
SELECT 'bench', 'b' || i, 'bench', i + 1, 'ok', 'sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef', 1,
       CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) FROM n;
WITH RECURSIVE n(i) AS (SELECT $from UNION ALL SELECT i + 1 FROM n WHERE i < $from + $step - 1)
INSERT INTO state (handler, key, name, value)
SELECT 'bench', 'k' || (i % $keys), 'seen', CAST(i AS BLOB) FROM n WHERE true
ON CONFLICT (handler, key, name) DO UPDATE SET value = excluded.value;
WITH RECURSIVE n(i) AS (SELECT $from UNION ALL SELECT i + 1 FROM n WHERE i < $from + $step - 1)
INSERT INTO events (topic, partition, "offset", id, source, type, time, content_type, data_schema, data, headers, key, appended_at)
SELECT 'bench-out', (i % $keys) % 4, i, lower(hex(randomblob(16))), 'sluice://handler/bench', 'bench.stepped', NULL,
       'application/json', NULL, CAST(i AS BLOB),
       '{"causationid":"b' || i || '","correlationid":"b' || i || '"}', 'k' || (i % $keys),
       CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) FROM n;
UPDATE partition_heads SET next_offset = next_offset + $step / 4 WHERE topic = 'bench-out';
INSERT INTO positions VALUES ('bench', 'bench', $from + $step)
ON CONFLICT (handler, topic) DO UPDATE SET position = excluded.position;
COMMIT;
SQL
  done
} > "$dir/work.sql"

start=$(date +%s.%N)
# `time` of bash: the sqlite3 process's own CPU (user + sys).
TIMEFORMAT='%U %S'
cpu=$({ time sqlite3 "$db" < "$dir/work.sql" > /dev/null; } 2>&1)
end=$(date +%s.%N)
read -r user sys <<< "$cpu"
python3 - "$events" "$keys" "$sync" "$step" "$start" "$end" "$user" "$sys" <<'PY'
import sys
events, keys, sync, step = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
wall = float(sys.argv[6]) - float(sys.argv[5])
cpu = float(sys.argv[7]) + float(sys.argv[8])
print(f"{events} events, {keys} keys, synchronous={sync}, {step} a transaction: {wall:.2f} s wall, "
      f"{wall / events * 1e6:.1f} us/event ({events / wall:,.0f} events/s), "
      f"sqlite3 CPU {cpu / events * 1e6:.1f} us/event")
PY
