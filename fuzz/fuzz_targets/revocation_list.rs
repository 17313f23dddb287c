#![no_main]
//! `revocation_list`: see `cpns::fuzzing::run` for what it decodes.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cpns::fuzzing::run("revocation_list", data);
});
