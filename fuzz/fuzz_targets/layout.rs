#![no_main]
//! `strata_blockstore::fuzzing::layout` (docs/fuzzing.md).
libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_blockstore::fuzzing::layout(data));
