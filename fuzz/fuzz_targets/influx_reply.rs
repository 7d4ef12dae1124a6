//! InfluxDB write replies (status code, body, the batch's lines) through the
//! writer's reply readers: the classifier, the error-body reader, the
//! unparsable-line finder, the rejection kind and the type guard's readers.
//!
//! Input: two bytes of status code (big endian, taken modulo 600), then the body;
//! the batch is the body's lines after a line `---lines---`, if any (so a reply
//! quoting its lines can be written as one seed).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [hi, lo, rest @ ..] = data else {
        return;
    };
    let code = u16::from_be_bytes([*hi, *lo]) % 600;
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let (body, lines) = match text.split_once("\n---lines---\n") {
        Some((body, lines)) => (body, lines.lines().collect::<Vec<_>>()),
        None => (text, Vec::new()),
    };
    ha_ingestor::sink::influxdb::fuzz_reply(code, body, &lines);
});
