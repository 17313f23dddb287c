#![no_main]
//! `group_key_secret`: see `cpns::fuzzing::run` for what it decodes.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cpns::fuzzing::run("group_key_secret", data);
});
