#![no_main]
//! `strata_snapshot::fuzzing::meta_value` (docs/fuzzing.md).
libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_snapshot::fuzzing::meta_value(data));
