#!/usr/bin/env bash
# InfluxDB outage under steady load, end to end with the release binary:
# a private mosquitto → `ha-ingestor run` (json decoder, split = "per_key": one
# point per key of a Zigbee2MQTT-style payload) → durable buffer → a private
# influxd 1.6. The load is a separate process (`ha-ingestor bench mqtt-publish`,
# QoS 1) so the ingestor's CPU is its own. influxd is killed with SIGKILL at
# OUTAGE_AT and started again OUTAGE_FOR seconds later, while the load goes on.
#
#   cargo build --release
#   scripts/bench-outage.sh [MSG_RATE] [SECONDS] [OUTAGE_AT] [OUTAGE_FOR]
#   (defaults: 770 messages/s (13 points each: ~10,000 points/s) for 120 s, outage from 20 s for 60 s)
#
# Every second it prints: points in (encoded) and points written in that
# second, the buffer's points and bytes (gauges), the buffer file's size, the
# ingestor's RSS and both processes' CPU time. At the end it waits until the
# buffer is empty and counts what influxd holds, per field (`value` and
# `state`), against the points encoded and the messages published.
# The samples stay in $WORK/samples.tsv (WORK is printed).
set -euo pipefail

MSG_RATE=${1:-770}
LOAD_SECONDS=${2:-120}
OUTAGE_AT=${3:-20}
OUTAGE_FOR=${4:-60}
BIN=${BIN:-target/release/ha-ingestor}
INFLUXD=${INFLUXD:-influxd}
. "$(dirname "$0")/need.sh"
[ "$INFLUXD" != influxd ] || need influxd influxdb influxdb-client
TOPICS=${TOPICS:-500}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HTTP=$(free_port); RPC=$(free_port); MON=$(free_port); MQTT=$(free_port)
WORK=$(mktemp -d /tmp/ha-ingestor-outage.XXXXXX)
chmod 777 "$WORK"   # mosquitto drops root privileges and must write its log here
INFLUX_PID=""; RUN_PID=""; BROKER_PID=""; LOAD_PID=""
cleanup() {
  for p in "$LOAD_PID" "$RUN_PID" "$INFLUX_PID" "$BROKER_PID"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$WORK/influx" "$WORK/data"
}
trap cleanup EXIT

cat > "$WORK/mosquitto.conf" <<EOF
listener $MQTT 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 100000
log_dest file $WORK/mosquitto.log
EOF
mosquitto -c "$WORK/mosquitto.conf" & BROKER_PID=$!

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
  for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$HTTP/ping" >/dev/null && return 0
    sleep 0.1
  done
  echo "influxd did not start; see $WORK/influxd.log" >&2
  exit 1
}
start_influxd
curl -sf -XPOST "http://127.0.0.1:$HTTP/query" --data-urlencode "q=CREATE DATABASE outage" >/dev/null

cat > "$WORK/ingestor.toml" <<EOF
data_dir = "$WORK/data"
[monitor]
listen = "127.0.0.1:$MON"
[log]
level = "warn"
[schema]
override_measurement = "bench"
[influxdb]
url = "http://127.0.0.1:$HTTP"
database = "outage"
retry_max = "5s"
[[mqtt]]
url = "mqtt://127.0.0.1:$MQTT"
[[mqtt.subscriptions]]
name = "zigbee"
topic = "bench/+"
qos = 1
decoder = "json"
pattern = "bench/{device}"
split = "per_key"
timestamp = "last_seen"
timestamp_format = "epoch_millis"
EOF
"$BIN" run -c "$WORK/ingestor.toml" 2>"$WORK/ingestor.log" & RUN_PID=$!
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$MON/ready" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$MON/ready" >/dev/null || { echo "ingestor not ready:"; cat "$WORK/ingestor.log"; exit 1; }

TCK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
metric() { awk -v n="$1" '$1 == n {printf "%d", $2; found=1} END {if (!found) print 0}' <<<"$2"; }
sent_metric() { awk '/^ha_ingestor_sink_sent_points_total\{sink="influxdb"\}/ {printf "%d", $2; f=1} END {if (!f) print 0}' <<<"$1"; }

"$BIN" bench mqtt-publish --port "$MQTT" --rate "$MSG_RATE" --seconds "$LOAD_SECONDS" \
  --topics "$TOPICS" --qos 1 >"$WORK/load.json" 2>"$WORK/load.log" & LOAD_PID=$!

printf 't_s\tin_per_s\twritten_per_s\tbuffer_points\tbuffer_bytes\tbuffer_file_bytes\trss_kib\tingestor_cpu_s\tinfluxd_cpu_s\tinfluxd_up\n' | tee "$WORK/samples.tsv"
t=0; down=0; back_at=$((OUTAGE_AT + OUTAGE_FOR))
prev_in=0; prev_out=0
ingestor_cpu=0; influxd_cpu_done=0   # influxd CPU of the killed process, added to the new one's
influxd_cpu_now=0
load_done=""; empty_for=0
while :; do
  sleep 1; t=$((t + 1))
  if [ "$t" -eq "$OUTAGE_AT" ] && [ "$OUTAGE_FOR" -gt 0 ]; then
    influxd_cpu_done=$((influxd_cpu_done + $(cpu_ticks "$INFLUX_PID")))
    kill -9 "$INFLUX_PID"; wait "$INFLUX_PID" 2>/dev/null || true; down=1
    echo "# influxd killed at t=$t s" >&2
  fi
  if [ "$down" -eq 1 ] && [ "$t" -eq "$back_at" ]; then
    start_influxd; down=0
    echo "# influxd restarted at t=$t s" >&2
  fi
  m=$(curl -sf "http://127.0.0.1:$MON/metrics" || true)
  in=$(metric ha_ingestor_encoder_points_total "$m")
  out=$(sent_metric "$m")
  points=$(metric ha_ingestor_buffer_points "$m")
  bytes=$(metric ha_ingestor_buffer_bytes "$m")
  file=$(stat -c %s "$WORK/data/buffer/buffer.redb" 2>/dev/null || echo 0)
  rss=$(awk '/^VmRSS/{print $2}' "/proc/$RUN_PID/status" 2>/dev/null || echo 0)
  ingestor_cpu=$(cpu_ticks "$RUN_PID")
  if [ "$down" -eq 0 ]; then influxd_cpu_now=$((influxd_cpu_done + $(cpu_ticks "$INFLUX_PID"))); fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$((in - prev_in))" "$((out - prev_out))" \
    "$points" "$bytes" "$file" "${rss:-0}" \
    "$(awk -v c="$ingestor_cpu" -v k="$TCK" 'BEGIN{printf "%.2f", c/k}')" \
    "$(awk -v c="$influxd_cpu_now" -v k="$TCK" 'BEGIN{printf "%.2f", c/k}')" "$((1 - down))" |
    tee -a "$WORK/samples.tsv"
  prev_in=$in; prev_out=$out
  if [ -z "$load_done" ] && ! kill -0 "$LOAD_PID" 2>/dev/null; then
    wait "$LOAD_PID" || { echo "the load generator failed:"; cat "$WORK/load.log"; exit 1; }
    LOAD_PID=""; load_done=$t
  fi
  # Done when the load ended, influxd is up and the buffer stayed empty for 3 samples
  # (with every encoded point written).
  if [ -n "$load_done" ] && [ "$down" -eq 0 ] && [ "$points" -eq 0 ] && [ "$in" -eq "$out" ]; then
    empty_for=$((empty_for + 1)); [ "$empty_for" -ge 3 ] && break
  else
    empty_for=0
  fi
  if [ "$t" -gt $((LOAD_SECONDS + OUTAGE_FOR + 300)) ]; then echo "gave up waiting for the buffer to empty" >&2; break; fi
done

m=$(curl -sf "http://127.0.0.1:$MON/metrics" || true)
encoded=$(metric ha_ingestor_encoder_points_total "$m")
written=$(sent_metric "$m")
decode_errors=$(awk '/^ha_ingestor_mqtt_decode_errors_total/ {s += $2} END {printf "%d", s}' <<<"$m")
dead=$(awk '/^ha_ingestor_dead_letters_total/ {s += $2} END {printf "%d", s}' <<<"$m")
# Points per series: a point can carry both `value` and `state` (an on/off state
# gives value 1/0 and the text), so per-field totals overcount; every series here
# holds points of one shape, so its point count is the larger of its two field counts.
# `mixed` counts series where both fields are present with different counts (then
# the figure would not be exact; it should be 0).
read -r stored mixed < <(curl -sf -G "http://127.0.0.1:$HTTP/query" --data-urlencode db=outage \
  --data-urlencode "q=SELECT count(value), count(state) FROM bench GROUP BY entity_id" |
  python3 -c '
import json, sys
r = json.load(sys.stdin)["results"][0]
total = mixed = 0
for s in r.get("series", []):
    v, st = (x or 0 for x in s["values"][0][1:3])
    total += max(v, st)
    mixed += 1 if v and st and v != st else 0
print(total, mixed)')
published=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["published"])' "$WORK/load.json")
acked=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["acked"])' "$WORK/load.json")
echo "load: $(tr -d '\n ' <"$WORK/load.json")"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$WORK/samples.tsv" "$OUTAGE_AT" "$OUTAGE_FOR" "$published" "$acked" "$encoded" "$written" \
  "$stored" "$mixed" "$decode_errors" "$dead" <<'EOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])][1:]
rows = [dict(t=int(r[0]), inp=int(r[1]), out=int(r[2]), bpoints=int(r[3]), bbytes=int(r[4]),
             file=int(r[5]), rss=int(r[6]), icpu=float(r[7]), dcpu=float(r[8]), up=int(r[9])) for r in rows]
at, dur = int(sys.argv[2]), int(sys.argv[3])
pub, acked, enc, wr, stored, mixed, derr, dead = (int(x) for x in sys.argv[4:12])
print(f"messages published {pub} (broker acks {acked}); points encoded {enc}, written {wr}, "
      f"stored {stored} (series of mixed shape: {mixed}); points per message {enc / max(pub, 1):.2f}")
print(f"  missing in influxd: {enc - stored}; written - encoded (duplicate writes): {wr - enc}; "
      f"decode errors {derr}; dead letters {dead}")
def window(a, b, label):
    w = [r for r in rows if a < r["t"] <= b]
    if len(w) < 2:
        return
    first, last = w[0], w[-1]
    span = last["t"] - first["t"]
    ic = last["icpu"] - first["icpu"]; dc = last["dcpu"] - first["dcpu"]
    pin = sum(r["inp"] for r in w[1:]); pout = sum(r["out"] for r in w[1:])
    ratio = f"{ic / dc:.2f}" if dc > 0 else "n/a"
    print(f"{label} (t {first['t']}..{last['t']} s): in {pin / span:,.0f} points/s, written {pout / span:,.0f} points/s; "
          f"ingestor CPU {ic:.2f} s ({pout / ic if ic else 0:,.0f} written points per CPU-second), "
          f"influxd CPU {dc:.2f} s, ratio ingestor/influxd {ratio}")
window(3, at - 1, "steady, before the outage")
outage = [r for r in rows if at <= r["t"] < at + dur]
if outage:
    print(f"outage (t {outage[0]['t']}..{outage[-1]['t']} s): buffer points {outage[0]['bpoints']:,} -> {outage[-1]['bpoints']:,}, "
          f"buffer bytes {outage[0]['bbytes']:,} -> {outage[-1]['bbytes']:,}, file {outage[0]['file']:,} -> {outage[-1]['file']:,} bytes; "
          f"RSS {outage[0]['rss'] / 1024:.1f} -> {outage[-1]['rss'] / 1024:.1f} MiB (peak {max(r['rss'] for r in outage) / 1024:.1f} MiB)")
back = [r for r in rows if r["t"] > at + dur]
# Caught up: the buffer holds no more than it did in steady state before the outage
# (the points waiting for their batch, up to flush_interval's worth).
steady = [r["bpoints"] for r in rows if 3 < r["t"] < at]
level = max(steady) if steady else 0
drained = next((r["t"] for r in back if r["bpoints"] <= level), None)
if back and dur > 0:
    print(f"after the restart: buffer back to its steady level ({level:,} points) at t {drained} s "
          f"({(drained - at - dur) if drained else 'n/a'} s after the restart)")
    if drained:
        window(at + dur, drained, "catching up (backlog + live load)")
print(f"peak RSS over the run {max(r['rss'] for r in rows) / 1024:.1f} MiB; peak buffer file {max(r['file'] for r in rows):,} bytes")
EOF
echo "samples: $WORK/samples.tsv; logs: $WORK/*.log"
grep -ci "error" "$WORK/ingestor.log" | sed 's/^/ingestor log lines with "error": /' || true
