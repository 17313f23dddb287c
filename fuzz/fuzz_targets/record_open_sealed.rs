#![no_main]
//! `record_open_sealed`: see `cpns::fuzzing::run` for what it decodes.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cpns::fuzzing::run("record_open_sealed", data);
});
