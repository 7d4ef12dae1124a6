#!/usr/bin/env python3
"""Independent oracle for the golden rule-chain case: reads the recorded frames
and writes one decision per event, following config.toml's rules by hand.

Run from the repository root:
    python3 tests/data/rules/oracle.py > tests/data/rules/expected.txt
"""
import fnmatch
import json
import re


def rust_float(text):
    """A number as Rust's str::parse::<f64> reads it (no spaces, no underscores)."""
    if text != text.strip() or "_" in text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def decide(event):
    etype = event["event_type"]
    if etype == "call_service":
        return "drop", "gate"
    if etype != "state_changed":
        return "drop", "default"
    data = event["data"]
    eid = data["entity_id"]
    domain = eid.split(".", 1)[0]
    new = data.get("new_state")
    old = data.get("old_state")
    if fnmatch.fnmatchcase(eid, "sensor.accept_special_*"):
        return "drop", "gate"
    if fnmatch.fnmatchcase(eid, "sensor.*_long_*"):
        return "drop", "rule:drop long texts"
    if new and old and new["state"] == old["state"] and new["attributes"] != old["attributes"]:
        return "drop", "rule:attribute-only updates"
    if domain == "sensor" and new and "unit_of_measurement" in new["attributes"]:
        return "keep", "rule:sensors with a unit"
    if domain == "input_number" and new:
        x = rust_float(new["state"].strip())
        if x is not None and x > 10:
            return "keep", "rule:numbers above 10"
    if re.search(r"^(input_boolean|binary_sensor)\.accept_flag", eid) and new and new["state"] == "on":
        if old is None or old["state"] != "on":
            return "keep", "rule:flags turned on"
    if domain == "input_select" and old and "options" in old["attributes"]:
        return "keep", "rule:mode from old"
    if domain == "sensor" and new:
        x = rust_float(new["state"])
        if (x if x is not None else 0) > 25:
            return "keep", "rule:hot text"
    return "drop", "default"


def main():
    n = 0
    with open("tests/data/fixtures/ha-ws-frames.jsonl", encoding="utf-8") as frames:
        for line in frames:
            frame = json.loads(line)
            for msg in frame if isinstance(frame, list) else [frame]:
                if msg.get("type") != "event":
                    continue
                event = msg["event"]
                eid = event.get("data", {}).get("entity_id", "-") if event["event_type"] == "state_changed" else "-"
                verdict, by = decide(event)
                print(f"{n} {event['event_type']} {eid} {verdict} {by}")
                n += 1


main()
