#![no_main]
//! `eukey_sealed`: see `cpns::fuzzing::run` for what it decodes.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cpns::fuzzing::run("eukey_sealed", data);
});
