#![no_main]
//! `strata_snapshot::fuzzing::intent_log` (docs/fuzzing.md).
libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_snapshot::fuzzing::intent_log(data));
