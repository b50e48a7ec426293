#!/usr/bin/env bash
# Runs a command and prints how the machine's CPU time over it split among
# tansu, PostgreSQL and everything else (Sluice's processes and the rest),
# from /proc: the busy time of /proc/stat for the machine, utime + stime of
# the tansu and postgres processes, plus the time of the postmaster's
# children that ended meanwhile (PostgreSQL backends, reaped by it).
#
# Usage: scripts/cpu-split.sh COMMAND [ARGS...]
# For example, with tansu and PostgreSQL running:
#   scripts/cpu-split.sh target/release/sluice bench --events 40000 --keys 1024 \
#       --brokers 127.0.0.1:9092 --kafka-property fetch.wait.max.ms=5 --setup kafka-native
set -euo pipefail

ticks=$(getconf CLK_TCK)

# CPU ticks of the processes named $1, live ones plus their reaped children.
ticks_of() {
  local total=0 pid stat rest
  for pid in $(pgrep -x "$1" || true); do
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    # Fields after the command name: utime is the 12th, cstime the 15th.
    rest=${stat##*) }
    read -r -a f <<< "$rest"
    total=$((total + f[11] + f[12] + f[13] + f[14]))
  done
  echo "$total"
}

machine_ticks() {
  # user nice system irq softirq steal: busy time of all cores.
  awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat
}

m0=$(machine_ticks); t0=$(ticks_of tansu); p0=$(ticks_of postgres)
"$@"
m1=$(machine_ticks); t1=$(ticks_of tansu); p1=$(ticks_of postgres)

python3 - "$ticks" "$m0" "$m1" "$t0" "$t1" "$p0" "$p1" <<'PY'
import sys
hz, m0, m1, t0, t1, p0, p1 = (int(x) for x in sys.argv[1:])
machine, tansu, pg = (m1 - m0) / hz, (t1 - t0) / hz, (p1 - p0) / hz
rest = machine - tansu - pg
def share(x):
    return f"{x:.2f} ({100 * x / machine:.0f}%)" if machine > 0 else f"{x:.2f}"
print(f"CPU-s over the command: machine {machine:.2f}, tansu {share(tansu)}, "
      f"PostgreSQL {share(pg)}, Sluice and the rest {share(rest)}")
PY
