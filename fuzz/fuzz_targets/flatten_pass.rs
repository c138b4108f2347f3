#![no_main]
//! `strata_snapshot::fuzzing::flatten_pass` (docs/fuzzing.md).
libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_snapshot::fuzzing::flatten_pass(data));
