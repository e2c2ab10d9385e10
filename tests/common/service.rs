//! What the named-service tests share: the leak footprint and an echo
//! server for one connection.

use remora::{RecvError, ServiceConnection};

/// Mappings of remora memfds in this process.
pub fn memfd_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|l| l.contains("/memfd:remora"))
        .count()
}

/// Everything a leak would show: descriptors, memfd mappings, and
/// remora files of ours in /dev/shm and the temp dir.
#[derive(Debug, PartialEq, Eq)]
pub struct Footprint {
    fds: usize,
    memfd_maps: usize,
    shm: Vec<String>,
    tmp: Vec<String>,
}

/// This process's [`Footprint`] now.
pub fn footprint() -> Footprint {
    Footprint {
        fds: super::open_fd_count(),
        memfd_maps: memfd_mappings(),
        shm: super::remora_segments(),
        tmp: super::remora_tmp_entries(),
    }
}

/// Echoes raw messages on `conn`'s "echo" channel until the client goes;
/// returns how many.
pub fn serve_echo(conn: ServiceConnection) -> usize {
    let (mut tx, mut rx) = conn.raw_channel("echo").unwrap();
    drop(conn);
    let mut n = 0;
    loop {
        match rx.recv() {
            Ok(msg) => {
                let reply = msg.to_vec();
                drop(msg);
                if tx.send(&reply).is_err() {
                    return n;
                }
                n += 1;
            }
            Err(RecvError::Disconnected) => return n,
            Err(e) => panic!("server recv: {e:?}"),
        }
    }
}
