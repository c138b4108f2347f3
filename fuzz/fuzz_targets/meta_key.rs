#![no_main]
//! `strata_snapshot::fuzzing::meta_key` (docs/fuzzing.md).
libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_snapshot::fuzzing::meta_key(data));
