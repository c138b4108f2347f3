//! The `strata` command (being written).
fn main() {}
