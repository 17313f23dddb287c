#![no_main]
//! `enrolment_code`: see `cpns::fuzzing::run` for what it decodes.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cpns::fuzzing::run("enrolment_code", data);
});
