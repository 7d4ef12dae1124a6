//! Home Assistant WebSocket frames, text and binary, through the source's decoder.
#![no_main]

use std::sync::Arc;

use ha_ingestor::event::SourceId;
use ha_ingestor::source::homeassistant::decode::{decode_binary_frame, decode_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let source: SourceId = Arc::from("ha:fuzz");
    let mut out = Vec::new();
    decode_binary_frame(data, &source, &mut out);
    if let Ok(text) = std::str::from_utf8(data) {
        let mut again = Vec::new();
        decode_frame(text, &source, &mut again);
        // A UTF-8 binary frame is read exactly like the same text frame.
        assert_eq!(out.len(), again.len(), "binary and text decoding differ");
        for (a, b) in out.iter().zip(&again) {
            match (a, b) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(a), Err(b)) => assert_eq!(a.kind(), b.kind()),
                _ => panic!("binary and text decoding differ: {a:?} vs {b:?}"),
            }
        }
    }
    for result in &out {
        if let Err(error) = result {
            // Error labels and messages are built for every bad frame: they must not panic either.
            let _ = (error.kind(), error.element(), error.to_string());
        }
    }
});
