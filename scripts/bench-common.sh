# Shared set-up of the MQTT benchmark scripts (sourced, not run): the broker installed
# when missing (and `need` for what else a script starts), the release binary, a scratch
# directory whose processes are stopped and which is removed on exit, free loopback
# ports, and a process's CPU time.

cd "$(dirname "$0")/.."
. scripts/need.sh
need mosquitto mosquitto
need mosquitto_sub mosquitto-clients
# BENCH_NO_BUILD=1 uses the release binary as it is (e.g. to measure a build of an earlier commit).
[ -n "${BENCH_NO_BUILD:-}" ] || cargo build --release --quiet
BIN=${BENCH_BIN:-$PWD/target/release/ha-ingestor}   # BENCH_BIN: another build to compare
TMP=$(mktemp -d)
chmod 777 "$TMP"   # mosquitto drops root privileges and must write its log here
PIDS=()   # started processes: stopped on exit
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# User + system CPU time of a process, in clock ticks (getconf CLK_TCK per second).
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
