#![no_main]
//! `strata_snapshot::fuzzing::generation_record` (docs/fuzzing.md).
libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_snapshot::fuzzing::generation_record(data));
