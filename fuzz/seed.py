#!/usr/bin/env python3
"""Seeds each fuzz target's corpus (fuzz/corpus/<target>/) from the recorded
fixtures (tests/data/fixtures/, and the shared copy when given) and the examples.

Usage: fuzz/seed.py [FIXTURE_DIR ...]   (run from the repository root; scripts/fuzz does)

JSON-lines fixtures are split into one file per frame or message; each target's
input format is described at the top of its fuzz_targets/<target>.rs.
Seed files are named seed-<sha1>, so running it again adds nothing twice.
"""
import glob
import hashlib
import json
import os
import re
import struct
import sys

CORPUS = "fuzz/corpus"
written = {}


def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "seed-" + hashlib.sha1(data).hexdigest())
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(data)
        written[target] = written.get(target, 0) + 1


def lines(path):
    with open(path, encoding="utf-8") as f:
        return [l.rstrip("\n") for l in f if l.strip()]


dirs = ["tests/data/fixtures"] + [d for d in sys.argv[1:] if os.path.isdir(d)]
for d in dirs:
    ws = os.path.join(d, "ha-ws-frames.jsonl")
    ents = os.path.join(d, "ha-subscribe-entities.jsonl")
    ss = os.path.join(d, "statestream.jsonl")
    pairs = os.path.join(d, "ha-native-pairs.jsonl")
    hist = os.path.join(d, "ha-history-response.json")

    # 1. ha_frame: one WebSocket frame a file, plus a coalesced array frame.
    frames = lines(ws) if os.path.exists(ws) else []
    for frame in frames:
        put("ha_frame", frame)
    if len(frames) > 4:
        put("ha_frame", "[" + ",".join(frames[3:7]) + "]")
    entity_frames = lines(ents) if os.path.exists(ents) else []
    for frame in entity_frames:
        put("ha_frame", frame)
    if os.path.exists(hist):
        with open(hist, encoding="utf-8") as f:
            h = json.load(f)
        put("ha_frame", json.dumps(h["response"]))

    # 2. ha_entities: the stream (one frame a line), whole and in short runs.
    if entity_frames:
        put("ha_entities", "\n".join(entity_frames))
        for i in range(3, len(entity_frames), 3):
            put("ha_entities", "\n".join([entity_frames[3]] + entity_frames[i : i + 3]))

    # 3. mqtt_decode: option set byte, then <flags><topic>\x01<payload> records split by \x00.
    def record(topic, payload, retained=False):
        return bytes([1 if retained else 0]) + topic.encode() + b"\x01" + payload.encode()

    if os.path.exists(ss):
        msgs = [json.loads(l) for l in lines(ss)]
        recs = [record(m["topic"], m["payload"], m.get("retain", False)) for m in msgs]
        for i in range(0, len(recs), 8):
            chunk = b"\x00".join(recs[i : i + 8])
            put("mqtt_decode", b"\x00" + chunk)
            put("mqtt_decode", b"\x01" + chunk)
        # The same states as plain values.
        states = [m for m in msgs if m["topic"].endswith("/state")]
        for m in states[:20]:
            obj = m["topic"].split("/")[-2]
            put("mqtt_decode", b"\x00" + record("value/" + obj + "/state", m["payload"]))
            put("mqtt_decode", b"\x01" + record("value/" + obj + "/state", m["payload"]))
            put("mqtt_decode", b"\x00" + record("value_event/" + obj, m["payload"]))
    # HA's events as mqtt_eventstream would publish them.
    for frame in frames:
        msg = json.loads(frame)
        if msg.get("type") == "event":
            ev = msg["event"]
            body = json.dumps({"event_type": ev["event_type"], "event_data": ev["data"]})
            put("mqtt_decode", b"\x00" + record("homeassistant_eventstream/x", body))

    # 5. line_protocol: counts, kinds, timestamp, then tab-separated strings from real states.
    if os.path.exists(pairs):
        for l in lines(pairs):
            ev = json.loads(l)["event"]
            new = ev["data"].get("new_state") or {}
            attrs = new.get("attributes", {})
            strings = [
                attrs.get("unit_of_measurement") or ev["data"]["entity_id"],
                "domain", ev["data"]["entity_id"].split(".")[0],
                "entity_id", ev["data"]["entity_id"].split(".", 1)[-1],
                "value", str(new.get("state", "")),
                "friendly_name_str", str(attrs.get("friendly_name", "")),
            ]
            head = bytes([0b0110, 0b0100]) + struct.pack("<q", 1795725887219127000)
            put("line_protocol", head + "\t".join(strings).encode())

    # 4. influx_reply: status, body, then the batch's lines.
    if os.path.exists(pairs):
        for l in lines(pairs):
            p = json.loads(l)
            status = p.get("batch_status") or 204
            body = p.get("batch_response") or ""
            put("influx_reply", struct.pack(">H", status) + body.encode() + b"\n---lines---\n" + "\n".join(p["lines"]).encode())

# influx_reply: the bodies InfluxDB 1.x and 2.x give (docs/ and the reference).
for status, body in [
    (400, '{"error":"partial write: field type conflict: input field \\"value\\" on measurement \\"°C\\" is type float, already exists as type string dropped=1"}'),
    (422, '{"code":"unprocessable entity","message":"failure writing points to database: partial write: points beyond retention policy dropped=3"}'),
    (400, '{"error":"partial write: unable to parse \'m,t=1 value=\': missing field value\\nunable to parse \'bad line\': invalid field format dropped=0"}\n---lines---\nm,t=1 value=\nbad line'),
    (500, '{"error":"partial write: max-series-per-database limit exceeded: (1) dropped=2"}'),
    (404, '{"error":"database not found: \\"ha\\""}'),
    (400, '{"code":"invalid","message":"organization name \\"x\\" not found"}'),
    (200, '{"results":[{"statement_id":0,"series":[{"name":"°C","columns":["fieldKey","fieldType"],"values":[["value","float"],["friendly_name_str","string"]]}]}]}'),
    (413, "Request Entity Too Large"),
    (503, ""),
]:
    put("influx_reply", struct.pack(">H", status) + body.encode())

# 6. config_env: the examples, with the secrets written as @S@, and some overrides.
secret_line = re.compile(r'^(\s*(?:token|password|api_key|[a-z_]*_token|[a-z_]*_password)\s*=\s*)"[^"]*"', re.M)
for path in sorted(glob.glob("examples/*.toml")):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    text = re.sub(r"^.*(token_file|password_file).*$", "", text, flags=re.M)
    seeded = secret_line.sub(r"\1@S@", text)
    put("config_env", "s3cr3t-v4lue\n" + seeded)
    put("config_env", 's3c"r\\et\n' + seeded.replace("@S@", "@L@"))
    put("config_env", "s3cr3t-v4lue\n" + seeded + "\n---env---\nHA_INGESTOR_INFLUXDB__TOKEN=@S@\nHA_INGESTOR_INFLUXDB__BATCH_SIZE=ten\n")
    put("config_env", "s3cr3t-v4lue\n" + seeded + "\n---env---\nHA_INGESTOR_INFLUXDB__PASSWORD=@S@\nHA_INGESTOR_INFLUXDB__URL=not a url\n")

for target, n in sorted(written.items()):
    print(f"fuzz/seed.py: {target}: {n} new seed(s)")
