//! A damaged pack file is caught, never served: after flipping one byte of a pack under
//! STORE/packs/, reading the file it holds fails with EIO (every range reads either the
//! right bytes or EIO, never wrong bytes), and `strata verify` exits non-zero naming the
//! pack.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use strata_tests::data::{random_bytes, write_synced};
use strata_tests::{sys, TestStore};

/// Every regular file below `dir`.
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in
            fs::read_dir(&dir).unwrap_or_else(|err| panic!("read {}: {err}", dir.display()))
        {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                pending.push(path);
            } else if meta.is_file() {
                found.push(path);
            }
        }
    }
    found
}

#[test]
fn flipped_byte_in_a_pack_gives_eio_and_verify_names_the_pack() {
    let ts = TestStore::new();
    let mount = ts.mount();
    let data = random_bytes(31, 1 << 20); // incompressible: stored as is
    write_synced(&ts.path("victim.bin"), &data).unwrap();
    strata_tests::strata(["snapshot", "create", ts.store.to_str().unwrap(), "before"])
        .assert_success();
    let other = random_bytes(32, 4096);
    mount.unmount();

    let packs = files_below(&ts.store.join("packs"));
    let pack = packs
        .iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap_or_else(|| panic!("no pack files under {}", ts.store.join("packs").display()))
        .clone();
    let len = fs::metadata(&pack).unwrap().len();
    assert!(
        len >= 1 << 20,
        "the largest pack {} has only {len} bytes for 1 MiB of random data",
        pack.display()
    );
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&pack)
        .unwrap();
    let offset = len / 2;
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, offset).unwrap();
    byte[0] ^= 0x01;
    file.write_all_at(&byte, offset).unwrap();
    file.sync_all().unwrap();
    drop(file);

    let mount = ts.mount();
    let file = File::open(ts.path("victim.bin")).unwrap();
    let mut eio = 0;
    for round in 0..2 {
        let mut buffer = vec![0u8; 64 << 10];
        for (index, expected) in data.chunks(64 << 10).enumerate() {
            let offset = (index * (64 << 10)) as u64;
            match file.read_exact_at(&mut buffer[..expected.len()], offset) {
                Ok(()) => assert!(
                    buffer[..expected.len()] == *expected,
                    "round {round}: wrong bytes served at offset {offset} of a damaged file"
                ),
                Err(err) => {
                    assert_eq!(
                        sys::errno(&err),
                        libc::EIO,
                        "round {round}, offset {offset}: {err}"
                    );
                    eio += 1;
                }
            }
        }
    }
    assert!(eio >= 2, "no EIO reading a file whose pack was damaged");
    // The rest of the store still works.
    write_synced(&ts.path("other.bin"), &other).unwrap();
    drop(file);
    let pack_name = pack.file_name().unwrap().to_string_lossy().into_owned();
    // A scrub through the daemon while mounted finds it too, and names the file in every
    // tree that holds it (the live tree and the snapshot).
    let scrub = ts.verify();
    assert_eq!(scrub.code(), Some(1), "scrub: {}", scrub.output());
    for needle in [
        pack_name.as_str(),
        "/victim.bin: data at offset",
        "snapshot before: /victim.bin",
    ] {
        assert!(
            scrub.output().contains(needle),
            "scrub output does not name {needle:?}:\n{}",
            scrub.output()
        );
    }
    assert!(
        strata_tests::mounts::is_mounted(&ts.mnt),
        "the scrub ended the mount"
    );
    mount.unmount();

    let verify = ts.verify();
    assert_eq!(
        verify.code(),
        Some(1),
        "verify of a damaged store: {}{}",
        verify.stdout,
        verify.stderr
    );
    assert!(
        verify.output().contains(&pack_name),
        "verify output does not name {pack_name}:\n{}",
        verify.output()
    );
    assert!(
        verify.stdout.contains("problem"),
        "no problem line:\n{}",
        verify.stdout
    );
}

/// A scrub through the daemon that outlasts the reply timeout still ends with its report:
/// the command asks for progress lines even off a terminal, and each restarts the
/// timeout (`STRATA_CONTROL_TIMEOUT` is per line). 12 MiB at 2 MiB/s: about 6 s, against
/// a timeout of 3 s (the scrub reports about every 4 MiB of packs, 2 s at this rate).
#[test]
fn a_scrub_through_the_daemon_outlasts_the_reply_timeout() {
    let ts = TestStore::new();
    let m = ts.mount();
    write_synced(&m.path("f"), &random_bytes(5, 12 << 20)).unwrap();
    let started = std::time::Instant::now();
    let run = strata_tests::binary::strata_env(
        [
            "verify".as_ref(),
            ts.mnt.as_os_str(),
            "--rate".as_ref(),
            "2".as_ref(),
        ],
        &[("STRATA_CONTROL_TIMEOUT", "3".as_ref())],
    );
    let took = started.elapsed();
    assert!(
        run.success(),
        "verify through the daemon:\n{}{}",
        run.stdout,
        run.stderr
    );
    assert!(run.stdout.contains("clean"), "{}", run.stdout);
    assert!(
        took >= std::time::Duration::from_secs(3),
        "the scrub took only {took:?}"
    );
    m.unmount();
}
