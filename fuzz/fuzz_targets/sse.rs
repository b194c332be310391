//! The HTTP engine's incremental SSE parser (`em_http::sse`). Property:
//! neither `parse_all` nor `SseParser::feed` panics, and feeding the body
//! in chunks split anywhere (here at points drawn from the input's first
//! bytes) gives exactly what parsing it whole gives, events or error.
#![no_main]

use em_http::sse::{parse_all, parse_chunks};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (seed, body) = match data {
        [a, b, rest @ ..] => (u16::from_le_bytes([*a, *b]), rest),
        _ => (0, data),
    };
    let whole = parse_all(body);
    // Chunk lengths from a small LCG: 0 (empty chunks are legal) to 16.
    let mut state = u32::from(seed) | 1;
    let mut chunks = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = ((state >> 16) % 17) as usize;
        let (c, r) = rest.split_at(n.min(rest.len()));
        chunks.push(c);
        rest = r;
    }
    let split = parse_chunks(chunks.iter().copied());
    assert_eq!(whole, split, "split into {} chunks", chunks.len());
    if let Ok(events) = whole {
        for e in &events {
            let _ = e.is_done();
        }
    }
});
