//! Unguessable random numbers for segment names.

use std::io;

/// 128 bits from the kernel's CSPRNG (`getrandom(2)`).
pub(crate) fn random_u128() -> io::Result<u128> {
    let mut buf = [0u8; 16];
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n =
            unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(u128::from_ne_bytes(buf))
}
