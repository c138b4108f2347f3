#![no_main]
//! `strata_snapshot::fuzzing::store_config` (docs/fuzzing.md).
libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_snapshot::fuzzing::store_config(data));
