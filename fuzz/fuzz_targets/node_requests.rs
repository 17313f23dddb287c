#![no_main]
//! `node_requests`: see `cpns::fuzzing::run` for what it decodes.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cpns::fuzzing::run("node_requests", data);
});
