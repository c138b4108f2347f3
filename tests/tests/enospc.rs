//! Running out of space: with the store on a 64 MiB tmpfs, writing incompressible data
//! until it fails gives the writer ENOSPC (errno 28), not EIO or a crash; every file
//! fsynced before that reads back intact; after deleting a file, writes work again; and
//! after unmount and remount the store is intact and `strata verify` is clean. The tmpfs is
//! always unmounted, whatever happens.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::time::{Duration, Instant};

use strata_tests::data::{assert_same_bytes, random_bytes, write_synced};
use strata_tests::{sys, TestStore};

const FILE_SIZE: usize = 4 << 20;
const PIECE: usize = 256 << 10;

/// Writes `data` to `path` in pieces and fsyncs; the error of the first failing call.
fn write_file(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    let mut file = File::create(path)?;
    for piece in data.chunks(PIECE) {
        file.write_all(piece)?;
    }
    file.sync_all()
}

#[test]
fn enospc_is_reported_and_recovered_from() {
    let ts = TestStore::on_tmpfs("64m");
    let mount = ts.mount();
    let mut synced: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut failure = None;
    for index in 0..64u64 {
        let name = format!("fill-{index:02}.bin");
        let data = random_bytes(1000 + index, FILE_SIZE);
        match write_file(&ts.path(&name), &data) {
            Ok(()) => {
                synced.insert(name, data);
            }
            Err(err) => {
                failure = Some((name, err));
                break;
            }
        }
    }
    let (failed_name, err) =
        failure.expect("256 MiB written to a store on a 64 MiB tmpfs without an error");
    assert_eq!(
        sys::errno(&err),
        libc::ENOSPC,
        "writing {failed_name} on a full store: {err}"
    );
    assert!(
        synced.len() >= 4,
        "only {} files fitted before ENOSPC",
        synced.len()
    );

    for (name, data) in &synced {
        assert_same_bytes(&fs::read(ts.path(name)).unwrap(), data, name);
    }

    // Free space and write again; reclaiming may take a moment (GC), so retry a while.
    let _ = fs::remove_file(ts.path(&failed_name));
    let (first, _) = synced.pop_first().unwrap();
    fs::remove_file(ts.path(&first)).unwrap();
    let (second, _) = synced.pop_first().unwrap();
    fs::remove_file(ts.path(&second)).unwrap();
    let after = random_bytes(2000, 1 << 20);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = sys::syncfs(&File::open(&ts.mnt).unwrap())
            .map_err(|err| ("syncfs", err))
            .and_then(|()| {
                write_synced(&ts.path("after-delete.bin"), &after)
                    .map_err(|err| ("write + fsync", err))
            });
        match attempt {
            Ok(()) => break,
            Err((_, err)) if sys::errno(&err) == libc::ENOSPC && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(500));
            }
            Err((what, err)) => {
                panic!("{what} after deleting 8 MiB of files from a full store: {err}")
            }
        }
    }
    synced.insert("after-delete.bin".into(), after);
    mount.unmount();

    let mount = ts.mount();
    for (name, data) in &synced {
        assert_same_bytes(
            &fs::read(ts.path(name)).unwrap(),
            data,
            &format!("{name} after remount"),
        );
    }
    assert!(
        !ts.path(&first).exists() && !ts.path(&second).exists(),
        "deleted files came back"
    );
    mount.unmount();
    ts.assert_verify_clean();
}
