#![no_main]
//! `cpns_frame`: see `cpns::fuzzing::run` for what it decodes.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cpns::fuzzing::run("cpns_frame", data);
});
