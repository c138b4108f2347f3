#![no_main]
//! `strata_blockstore::fuzzing::record` (docs/fuzzing.md).
libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_blockstore::fuzzing::record(data));
