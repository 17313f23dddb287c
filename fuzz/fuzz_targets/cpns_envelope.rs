#![no_main]
//! `cpns_envelope`: see `cpns::fuzzing::run` for what it decodes.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cpns::fuzzing::run("cpns_envelope", data);
});
