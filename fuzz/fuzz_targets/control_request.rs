#![no_main]
//! `strata_cli::fuzzing::control_request` (docs/fuzzing.md).
libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_cli::fuzzing::control_request(data));
