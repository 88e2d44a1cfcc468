#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| goclaw::fuzz::request_frame(data));
