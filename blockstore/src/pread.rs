//! `read_record_at`: one record's header and payload in one `preadv`, the payload into a
//! vector that is not zeroed first (every byte of it is read before it is seen).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Reads `header.len() + len` bytes at `at`: the first into `header`, the rest into the
/// returned vector. A read that comes back short is continued; the end of the file
/// before all bytes is `UnexpectedEof`.
pub(crate) fn read_record_at(
    file: &File,
    header: &mut [u8],
    len: usize,
    at: u64,
) -> io::Result<Vec<u8>> {
    let mut payload: Vec<u8> = Vec::with_capacity(len);
    let total = header.len() + len;
    let mut done = 0usize;
    while done < total {
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; 2];
        let mut n = 0;
        if done < header.len() {
            iov[n] = libc::iovec {
                iov_base: header[done..].as_mut_ptr().cast(),
                iov_len: header.len() - done,
            };
            n += 1;
        }
        let filled = done.saturating_sub(header.len());
        if filled < len {
            iov[n] = libc::iovec {
                // SAFETY: `filled < len <= capacity`: the pointer stays inside the
                // vector's allocation.
                iov_base: unsafe { payload.as_mut_ptr().add(filled) }.cast(),
                iov_len: len - filled,
            };
            n += 1;
        }
        let offset = libc::off_t::try_from(at + done as u64)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: each iovec names writable memory owned by `header` or by `payload`'s
        // spare capacity, valid for its length; `file` is open.
        let got = unsafe { libc::preadv(file.as_raw_fd(), iov.as_ptr(), n as i32, offset) };
        if got < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if got == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        done += got as usize;
        // SAFETY: the kernel wrote the payload's bytes up to `done - header.len()`, all
        // within its capacity.
        unsafe { payload.set_len(done.saturating_sub(header.len())) };
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_header_and_payload_and_stops_at_the_end() {
        let mut f = tempfile::tempfile().unwrap();
        let bytes: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        f.write_all(&bytes).unwrap();
        let mut h = [0u8; 10];
        let p = read_record_at(&f, &mut h, 3000, 7).unwrap();
        assert_eq!(&h[..], &bytes[7..17]);
        assert_eq!(p, &bytes[17..3017]);
        let p = read_record_at(&f, &mut h, 0, 4990).unwrap();
        assert_eq!((&h[..], p.len()), (&bytes[4990..], 0));
        let e = read_record_at(&f, &mut h, 100, 4950).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
