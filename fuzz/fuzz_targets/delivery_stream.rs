#![no_main]
//! `delivery_stream`: see `cpns::fuzzing::run` for what it decodes.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cpns::fuzzing::run("delivery_stream", data);
});
