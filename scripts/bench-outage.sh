#!/usr/bin/env bash
# InfluxDB outage under steady load, measured end to end with the release binary:
# `ha-ingestor demo` (built-in simulator → pipeline → durable buffer → InfluxDB)
# writes to a private influxd 1.6 that is killed at OUTAGE_AT and started again
# OUTAGE_FOR later. Every second it samples the buffer (from /metrics), the
# process's RSS and both processes' CPU time; at the end it compares the points
# InfluxDB holds with what the demo encoded.
#
#   cargo build --release
#   scripts/bench-outage.sh [RATE] [SECONDS] [OUTAGE_AT] [OUTAGE_FOR]
#   (defaults: 10000 events/s for 150 s, outage from 20 s for 60 s)
#
# Output: one line per second and a summary; the samples stay in $WORK/samples.tsv.
set -euo pipefail

RATE=${1:-10000}
SECONDS_TOTAL=${2:-150}
OUTAGE_AT=${3:-20}
OUTAGE_FOR=${4:-60}
BIN=${BIN:-target/release/ha-ingestor}
INFLUXD=${INFLUXD:-influxd}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HTTP=$(free_port); RPC=$(free_port); MON=$(free_port)
WORK=$(mktemp -d /tmp/ha-ingestor-outage.XXXXXX)
INFLUX_PID=""; DEMO_PID=""
cleanup() {
  [ -n "$DEMO_PID" ] && kill "$DEMO_PID" 2>/dev/null || true
  [ -n "$INFLUX_PID" ] && kill "$INFLUX_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK/influx" "$WORK/data"
}
trap cleanup EXIT

cat > "$WORK/influxd.conf" <<EOF
reporting-disabled = true
bind-address = "127.0.0.1:$RPC"
[meta]
  dir = "$WORK/influx/meta"
  logging-enabled = false
[data]
  dir = "$WORK/influx/data"
  wal-dir = "$WORK/influx/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:$HTTP"
  log-enabled = false
[logging]
  level = "warn"
  suppress-logo = true
EOF

start_influxd() {
  "$INFLUXD" run -config "$WORK/influxd.conf" >>"$WORK/influxd.log" 2>&1 &
  INFLUX_PID=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$HTTP/ping" >/dev/null && return 0
    sleep 0.1
  done
  echo "influxd did not start; see $WORK/influxd.log" >&2
  exit 1
}
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

start_influxd
INFLUX_CPU_BEFORE_KILL=0
"$BIN" demo --for "${SECONDS_TOTAL}s" --rate "$RATE" --entities 1000 \
  --influx-url "http://127.0.0.1:$HTTP" --influx-db outage \
  --data-dir "$WORK/data" --monitor "127.0.0.1:$MON" \
  --summary-json "$WORK/summary.json" --quiet >"$WORK/demo.log" 2>&1 &
DEMO_PID=$!

printf 't_s\tbuffer_points\tbuffer_bytes\tbuffer_file_bytes\trss_kib\tinfluxd_up\n' >"$WORK/samples.tsv"
t=0; down=0; back_at=$((OUTAGE_AT + OUTAGE_FOR)); caught_up=""
peak_points=0; peak_rss=0; peak_file=0
while kill -0 "$DEMO_PID" 2>/dev/null; do
  sleep 1; t=$((t + 1))
  if [ "$t" -eq "$OUTAGE_AT" ]; then
    INFLUX_CPU_BEFORE_KILL=$(cpu_ticks "$INFLUX_PID")
    kill -9 "$INFLUX_PID"; wait "$INFLUX_PID" 2>/dev/null || true; down=1
  fi
  if [ "$t" -eq "$back_at" ]; then start_influxd; down=0; fi
  metrics=$(curl -sf "http://127.0.0.1:$MON/metrics" || true)
  points=$(awk '/^ha_ingestor_buffer_points /{print int($2)}' <<<"$metrics"); points=${points:-0}
  bytes=$(awk '/^ha_ingestor_buffer_bytes /{print int($2)}' <<<"$metrics"); bytes=${bytes:-0}
  file=$(stat -c %s "$WORK/data/buffer/buffer.redb" 2>/dev/null || echo 0)
  rss=$(awk '/^VmRSS/{print $2}' "/proc/$DEMO_PID/status" 2>/dev/null || echo 0)
  [ "$points" -gt "$peak_points" ] && peak_points=$points
  [ "${rss:-0}" -gt "$peak_rss" ] && peak_rss=$rss
  [ "$file" -gt "$peak_file" ] && peak_file=$file
  if [ "$t" -gt "$back_at" ] && [ -z "$caught_up" ] && [ "$points" -lt $((RATE / 2)) ]; then
    caught_up=$((t - back_at))
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$points" "$bytes" "$file" "${rss:-0}" "$((1 - down))" | tee -a "$WORK/samples.tsv"
  DEMO_CPU=$(cpu_ticks "$DEMO_PID"); INFLUX_CPU=$(cpu_ticks "$INFLUX_PID")
done
wait "$DEMO_PID" || echo "demo exited non-zero (see $WORK/demo.log)"
DEMO_PID=""
stored=$(curl -sf -G "http://127.0.0.1:$HTTP/query" --data-urlencode db=outage \
  --data-urlencode 'q=SELECT count(*) FROM /.*/' | python3 -c '
import json, sys
total = 0
for s in json.load(sys.stdin)["results"][0].get("series", []):
    for row in s["values"]:
        total += max(v for v in row[1:] if isinstance(v, int))
print(total)')
echo "summary: $(cat "$WORK/summary.json" | tr -d '\n ')"
echo "stored_in_influxdb=$stored peak_buffer_points=$peak_points peak_buffer_file_bytes=$peak_file peak_rss_kib=$peak_rss catch_up_s=${caught_up:-not within the run}"
echo "cpu_ticks (1/100 s): ha-ingestor=$DEMO_CPU influxd(after restart)=$INFLUX_CPU influxd(before kill)=$INFLUX_CPU_BEFORE_KILL"
echo "samples: $WORK/samples.tsv"
