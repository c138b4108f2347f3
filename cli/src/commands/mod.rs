//! One module per subcommand: its clap `Args` and its `run`.

pub mod init;
pub mod mount;
pub mod stats;
pub mod umount;
pub mod verify;
