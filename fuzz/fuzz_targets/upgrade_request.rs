#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| goclaw::fuzz::upgrade_request(data));
