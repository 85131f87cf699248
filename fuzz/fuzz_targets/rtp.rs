#![no_main]
//! Fuzz target: see `courtline_fuzz::rtp` for what one input exercises.

libfuzzer_sys::fuzz_target!(|data: &[u8]| courtline_fuzz::rtp(data));
