//! Checks of the built `strata` binary that need no store and no FUSE. Being an
//! integration test of this package, it also makes `cargo test --workspace` build
//! `target/<profile>/strata`, which the end-to-end tests in `tests/` drive.

use std::process::{Command, Output};

fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run strata")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn help_lists_the_commands() {
    let output = strata(&["--help"]);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    for command in ["init", "mount", "umount", "verify", "stats"] {
        assert!(text.contains(command), "{command} missing from:\n{text}");
    }
}

#[test]
fn invalid_values_are_one_line_errors_with_exit_2() {
    let dir = std::env::temp_dir().join(format!("strata-cli-it-{}", std::process::id()));
    let store = dir.join("store");
    let store = store.to_str().unwrap();
    for (args, needles) in [
        (
            vec!["init", store, "--block-size", "3K"],
            vec!["'3K'", "4K", "1M"],
        ),
        (
            vec!["init", store, "--block-size", "2M"],
            vec!["'2M'", "4K", "1M"],
        ),
        (
            vec!["init", store, "--compression", "20"],
            vec!["'20'", "0", "19"],
        ),
        (
            vec!["init", store, "--compression", "-1"],
            vec!["'-1'", "19"],
        ),
    ] {
        let output = strata(&args);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("strata: error: "), "{err}");
        for needle in needles {
            assert!(
                err.contains(needle),
                "{args:?}: {needle} missing from {err}"
            );
        }
    }
    assert!(!dir.exists(), "an invalid init must not create anything");
}

#[test]
fn missing_store_is_named() {
    let output = strata(&["stats", "/nonexistent/strata-store"]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("/nonexistent/strata-store") && err.contains("does not exist"),
        "{err}"
    );
}
