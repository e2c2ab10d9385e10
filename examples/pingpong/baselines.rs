//! Baseline round trips that the `pingpong` example prints next to remora's.
//!
//! Each cross-process baseline `fork()`s a child that runs a bounded loop of
//! atomics and raw syscalls and then `_exit`s. Every sample is one round trip
//! as the parent sees it: write all `payload` bytes, hand them over, the peer
//! reads (checksums and verifies) every byte, writes a reply of the same size
//! and hands it back, and the parent reads and verifies the reply. Both sides
//! really write and really read every byte, so these are floors for the same
//! work, not strawmen:
//!
//! * [`shm_spin_pingpong`]: raw `MAP_SHARED` memory, one sequence cache line
//!   per direction, busy-waiting on Acquire loads. The hardware floor
//!   (cache-line hand-offs plus payload traffic); it keeps both cores busy.
//! * [`futex_pingpong`]: same mapping, but the reader sleeps in `FUTEX_WAIT`
//!   and the writer calls `FUTEX_WAKE` after every publish. No waiter
//!   tracking and no spinning first: the raw floor for a blocking hand-off.
//! * [`pipe_pingpong`], [`unix_socket_pingpong`]: `write(2)`/`read(2)` of the
//!   whole payload each way, i.e. two kernel copies per direction. Kernel
//!   buffers are enlarged where allowed, which favours these baselines.
//! * [`crossbeam_pingpong`]: two threads in one process pass one
//!   pre-allocated buffer back and forth over `bounded(1)` channels; each
//!   side writes and reads it. The in-process floor: ownership moves, no copy.
//! * [`memcpy_pair`]: two `memcpy`s of `payload` bytes and no communication:
//!   what a copy-in/copy-out design adds on top of signalling.
//!
//! Each sample includes two `Instant::now()` calls ([`timer_overhead`]).
//! Warmup rounds absorb page faults (first touch, copy-on-write after fork).
//! Nothing is pinned unless [`set_pinning`] asks for it. Any failure (peer
//! stalled for 5 s, died, or delivered a wrong checksum) panics; the forked
//! child is always reaped, and killed if it has not exited.
#![allow(dead_code)] // shared by examples that each use a subset

use std::hint::{black_box, spin_loop};
use std::io;
use std::os::fd::RawFd;
use std::slice;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A peer that makes no progress for this long is treated as dead.
const STALL: Duration = Duration::from_secs(5);
const NO_CPU: usize = usize::MAX;
static PIN_PARENT: AtomicUsize = AtomicUsize::new(NO_CPU);
static PIN_CHILD: AtomicUsize = AtomicUsize::new(NO_CPU);

/// Round-trip times in nanoseconds, one per timed iteration.
pub struct Samples(pub Vec<u64>);

impl Samples {
    pub fn median(&self) -> u64 {
        self.percentile(50.0)
    }

    /// Nearest-rank percentile, `p` in `0..=100` (e.g. 99.9); 0 if empty.
    pub fn percentile(&self, p: f64) -> u64 {
        let mut v = self.0.clone();
        v.sort_unstable();
        let rank = (p.clamp(0.0, 100.0) / 100.0 * v.len() as f64).ceil() as usize;
        v.get(rank.max(1) - 1).copied().unwrap_or(0)
    }
}

/// `"812 ns"`, `"2.16 µs"`, `"1.05 ms"`, `"1.20 s"`.
pub fn format_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.2} µs", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

/// CPUs for the measuring thread (`parent`) and its peer (`child`: the forked
/// process, or the second thread for crossbeam) in later baseline runs.
/// `None` leaves that side to the scheduler. Putting both on one CPU makes
/// [`shm_spin_pingpong`] crawl (each wait lasts until a preemption).
pub fn set_pinning(parent: Option<usize>, child: Option<usize>) {
    PIN_PARENT.store(parent.unwrap_or(NO_CPU), Ordering::Relaxed);
    PIN_CHILD.store(child.unwrap_or(NO_CPU), Ordering::Relaxed);
}

fn pinned(slot: &AtomicUsize) -> Option<usize> {
    Some(slot.load(Ordering::Relaxed)).filter(|&cpu| cpu != NO_CPU)
}

/// Gets (`get`) or sets the calling thread's CPU mask.
fn affinity(set: &mut libc::cpu_set_t, get: bool) -> io::Result<()> {
    let size = size_of::<libc::cpu_set_t>();
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t of `size` bytes.
    let r = unsafe {
        match get {
            true => libc::sched_getaffinity(0, size, set),
            false => libc::sched_setaffinity(0, size, set),
        }
    };
    (r == 0).then_some(()).ok_or_else(io::Error::last_os_error)
}

fn cpu_set(cpu: usize) -> io::Result<libc::cpu_set_t> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu < CPU_SETSIZE`, so the bit lies inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    Ok(set)
}

/// Pins the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    affinity(&mut cpu_set(cpu)?, false)
}

/// Pins the calling thread as [`set_pinning`] says for `slot`; restores the
/// previous mask on drop.
struct PinGuard(Option<libc::cpu_set_t>);

impl PinGuard {
    fn new(slot: &AtomicUsize) -> Self {
        PinGuard(pinned(slot).map(|cpu| {
            let mut old = cpu_set(0).expect("CPU 0 is valid");
            affinity(&mut old, true).expect("sched_getaffinity");
            pin_to_cpu(cpu).unwrap_or_else(|e| panic!("pinning to CPU {cpu}: {e}"));
            old
        }))
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        if let Some(old) = &mut self.0 {
            let _ = affinity(old, false);
        }
    }
}

/// Writes every byte: distinct LE words `seed, seed+1, ..`; tail bytes `seed as u8`.
pub fn fill(buf: &mut [u8], seed: u64) {
    let mut words = buf.chunks_exact_mut(8);
    for (i, w) in (&mut words).enumerate() {
        w.copy_from_slice(&seed.wrapping_add(i as u64).to_le_bytes());
    }
    words.into_remainder().fill(seed as u8);
}

/// Reads every byte: wrapping sum of the LE words plus the tail bytes.
fn checksum(buf: &[u8]) -> u64 {
    let words = buf.chunks_exact(8);
    let tail = words.remainder().iter().map(|&b| u64::from(b)).sum();
    let word = |w: &[u8]| u64::from_le_bytes(w.try_into().unwrap());
    words.map(word).fold(tail, u64::wrapping_add)
}

/// Verifies `buf` holds what `fill(buf, seed)` wrote, having read all of it.
pub fn verify(buf: &[u8], seed: u64) -> Result<(), Fail> {
    let (n, tail) = ((buf.len() / 8) as u64, (buf.len() % 8) as u64);
    let sum_0_to_n = (n / 2).wrapping_mul(n.wrapping_sub(1) | 1); // n(n-1)/2 for any n
    let want = seed.wrapping_mul(n).wrapping_add(sum_0_to_n);
    match black_box(checksum(buf)) == want.wrapping_add(tail * u64::from(seed as u8)) {
        true => Ok(()),
        false => Err(Fail::Corrupt),
    }
}

pub fn ping_seed(k: u32) -> u64 {
    u64::from(k)
}

pub fn pong_seed(k: u32) -> u64 {
    (u64::from(k) << 32) | 0xC0FFEE
}

/// Why a side gave up; the child exits with the discriminant as its status.
#[derive(Debug, Clone, Copy)]
pub enum Fail {
    Stall = 2,
    Corrupt = 3,
    Io = 4,
    Pin = 5,
}

/// One side of a cross-process round trip.
trait Link: Sized {
    /// Writes the payload of round `k` and hands it to the peer.
    fn send(&mut self, k: u32, seed: u64) -> Result<(), Fail>;
    /// Waits for the peer's round `k`, then reads and verifies all of it.
    fn recv(&mut self, k: u32, seed: u64) -> Result<(), Fail>;
    /// Called by the child before each round.
    fn child_tick(&mut self, _k: u32) {}
    /// The parent's half of round `k`: ping, then wait for and read the pong.
    fn ping(&mut self, k: u32) -> Result<(), Fail> {
        self.send(k, ping_seed(k))?;
        self.recv(k, pong_seed(k))
    }
    /// The child's half of round `k`.
    fn pong(&mut self, k: u32) -> Result<(), Fail> {
        self.child_tick(k);
        self.recv(k, ping_seed(k))?;
        self.send(k, pong_seed(k))
    }
    /// Disposes of the other side's copy inside the forked child, without `free()`.
    fn abandon(self) {
        std::mem::forget(self);
    }
}

/// Forks; the child answers `iters + warmup` rounds on `child` while the
/// parent times them on `parent`.
fn run<L: Link>(name: &str, mut parent: L, child: L, iters: usize, warmup: usize) -> Samples {
    let total = u32::try_from(iters + warmup).expect("too many iterations");
    let mut samples = Vec::with_capacity(iters);
    let cpu = pinned(&PIN_CHILD).map(|c| cpu_set(c).expect("invalid child CPU"));
    // SAFETY: the child only runs `child_main`: memory allocated before the
    // fork, atomics and raw syscalls, and it leaves through `_exit`.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        child_main(parent, child, cpu, total);
    }
    assert!(pid > 0, "{name}: fork: {}", io::Error::last_os_error());
    let mut reaper = Reaper(pid);
    drop(child); // closes the child's fds here, so that its death reads as EOF
    let pin = PinGuard::new(&PIN_PARENT);
    for k in 1..=total {
        let t0 = Instant::now();
        let round = parent.ping(k);
        let dt = t0.elapsed();
        if let Err(e) = round {
            let peer = reaper.reap(Duration::from_millis(500));
            panic!("{name}: round {k} failed: {e:?} (child: {peer:?})");
        }
        if k as usize > warmup {
            samples.push(dt.as_nanos() as u64);
        }
    }
    drop((pin, parent));
    if let Err(e) = reaper.reap(Duration::from_secs(2)) {
        panic!("{name}: child failed: {e}");
    }
    Samples(samples)
}

fn child_main<L: Link>(other: L, mut link: L, cpu: Option<libc::cpu_set_t>, total: u32) -> ! {
    struct ExitOnUnwind;
    impl Drop for ExitOnUnwind {
        fn drop(&mut self) {
            // SAFETY: ends the forked child; never returns into the parent's code.
            unsafe { libc::_exit(101) }
        }
    }
    let _guard = ExitOnUnwind;
    other.abandon();
    // SAFETY: restores the default SIGALRM action (terminate), used as a watchdog.
    unsafe { libc::signal(libc::SIGALRM, libc::SIG_DFL) };
    let mut rounds = || -> Result<(), Fail> {
        if let Some(mut set) = cpu {
            affinity(&mut set, false).map_err(|_| Fail::Pin)?;
        }
        (1..=total).try_for_each(|k| link.pong(k))
    };
    let code = rounds().map_or_else(|f| f as i32, |()| 0);
    // SAFETY: leaves the child without running destructors or atexit handlers.
    unsafe { libc::_exit(code) }
}

/// Owns a forked child; reaps it (killing it if needed) at the latest on drop.
struct Reaper(libc::pid_t);

impl Reaper {
    /// Waits up to `grace` for the child to exit, then SIGKILLs it.
    fn reap(&mut self, grace: Duration) -> Result<(), String> {
        let (pid, mut status) = (std::mem::replace(&mut self.0, 0), 0);
        let deadline = Instant::now() + grace;
        if pid <= 0 {
            return Ok(());
        }
        loop {
            // SAFETY: `pid` is our child, not yet reaped, so it cannot name
            // another process; `status` is a valid out pointer.
            if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                break;
            } else if Instant::now() >= deadline {
                // SAFETY: as above; the blocking wait returns once it is dead.
                unsafe {
                    (
                        libc::kill(pid, libc::SIGKILL),
                        libc::waitpid(pid, &mut status, 0),
                    )
                };
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        match (libc::WIFEXITED(status), libc::WEXITSTATUS(status)) {
            (true, 0) => Ok(()),
            (true, c) => Err(format!(
                "exit {c} (2 stall, 3 corrupt, 4 I/O, 5 pin, 101 panic)"
            )),
            _ => Err(format!("killed by signal {}", libc::WTERMSIG(status))),
        }
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.reap(Duration::ZERO);
    }
}

/// An anonymous `MAP_SHARED` mapping, inherited by forked children.
struct Shm(*mut u8, usize);

impl Drop for Shm {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly our mapping; no references into it outlive `self`.
        unsafe { libc::munmap(self.0.cast(), self.1) };
    }
}

struct ShmLink<'a> {
    seq: [&'a AtomicU32; 2], // [tx, rx]
    tx: *mut u8,
    rx: *const u8,
    len: usize,
    futex: bool,
}

impl Link for ShmLink<'_> {
    fn send(&mut self, k: u32, seed: u64) -> Result<(), Fail> {
        // SAFETY: `tx` has `len` bytes in the mapping; the peer reads them only
        // between our Release store of round k and its reply, so we are alone.
        let tx = unsafe { slice::from_raw_parts_mut(self.tx, self.len) };
        fill(tx, seed);
        self.seq[0].store(k, Ordering::Release);
        if self.futex {
            // SAFETY: FUTEX_WAKE only uses the (live, aligned) address as a key.
            unsafe { libc::syscall(libc::SYS_futex, self.seq[0].as_ptr(), libc::FUTEX_WAKE, 1) };
        }
        Ok(())
    }

    fn recv(&mut self, k: u32, seed: u64) -> Result<(), Fail> {
        let (mut stalled, mut spins) = (None::<Instant>, 0u32);
        let timeout = libc::timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        loop {
            let seen = self.seq[1].load(Ordering::Acquire);
            if seen == k {
                break;
            }
            let slow = if self.futex {
                let (word, wait) = (self.seq[1].as_ptr(), libc::FUTEX_WAIT);
                // SAFETY: `word` is a live, aligned u32 in the shared mapping; the
                // kernel only reads it and sleeps while it equals `seen` (<= 100 ms).
                unsafe { libc::syscall(libc::SYS_futex, word, wait, seen, &raw const timeout) != 0 }
            } else {
                spin_loop();
                spins = spins.wrapping_add(1);
                spins.is_multiple_of(1 << 20)
            };
            if slow && stalled.get_or_insert_with(Instant::now).elapsed() > STALL {
                return Err(Fail::Stall);
            }
        }
        // SAFETY: the peer published round k (Release, seen by our Acquire load)
        // and rewrites `rx` only after our reply, so nobody writes it meanwhile.
        verify(unsafe { slice::from_raw_parts(self.rx, self.len) }, seed)
    }
}

fn shm_run(name: &str, futex: bool, payload: usize, iters: usize, warmup: usize) -> Samples {
    let area = payload.max(1).next_multiple_of(4096);
    let len = 4096 + 2 * area; // two sequence lines, then one payload area per direction
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let flags = libc::MAP_SHARED | libc::MAP_ANONYMOUS;
    // SAFETY: a fresh mapping at a kernel-chosen address; nothing existing is affected.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, -1, 0) };
    assert_ne!(p, libc::MAP_FAILED, "mmap: {}", io::Error::last_os_error());
    let shm = Shm(p.cast(), len);
    // SAFETY: offsets 0 and 128 are 128-byte aligned (separate line pairs), in
    // the zeroed mapping, which outlives the links; only accessed atomically.
    let ping = unsafe { AtomicU32::from_ptr(shm.0.cast()) };
    // SAFETY: as above.
    let pong = unsafe { AtomicU32::from_ptr(shm.0.add(128).cast()) };
    // SAFETY: both payload areas (`area >= payload` bytes each) lie in the mapping.
    let (a, b) = unsafe { (shm.0.add(4096), shm.0.add(4096 + area)) };
    let link = |seq, tx, rx: *mut u8| ShmLink {
        seq,
        tx,
        rx,
        len: payload,
        futex,
    };
    let (parent, child) = (link([ping, pong], a, b), link([pong, ping], b, a));
    run(name, parent, child, iters, warmup)
}

/// Busy-waiting ping-pong over raw shared memory: the hardware floor.
pub fn shm_spin_pingpong(payload: usize, iters: usize, warmup: usize) -> Samples {
    shm_run("shm_spin", false, payload, iters, warmup)
}

/// Shared memory, `FUTEX_WAIT` to wait and `FUTEX_WAKE` after every publish.
pub fn futex_pingpong(payload: usize, iters: usize, warmup: usize) -> Samples {
    shm_run("futex", true, payload, iters, warmup)
}

/// A byte-stream side: the payload goes through `write(2)`/`read(2)`.
struct FdLink {
    fds: [RawFd; 2], // [tx, rx]; equal for a socket
    buf: Vec<u8>,
}

fn fd_link(tx: RawFd, rx: RawFd, payload: usize) -> FdLink {
    FdLink {
        fds: [tx, rx],
        buf: vec![0; payload],
    }
}

fn interrupted() -> bool {
    io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
}

impl Link for FdLink {
    fn send(&mut self, _k: u32, seed: u64) -> Result<(), Fail> {
        fill(&mut self.buf, seed);
        let mut rest = &self.buf[..];
        while !rest.is_empty() {
            // SAFETY: `rest` is a readable region of `rest.len()` bytes.
            match unsafe { libc::write(self.fds[0], rest.as_ptr().cast(), rest.len()) } {
                n if n > 0 => rest = &rest[n as usize..],
                n if n < 0 && interrupted() => {}
                _ => return Err(Fail::Io),
            }
        }
        Ok(())
    }

    fn recv(&mut self, _k: u32, seed: u64) -> Result<(), Fail> {
        let mut got = 0;
        while got < self.buf.len() {
            let rest = &mut self.buf[got..];
            // SAFETY: `rest` is a writable region of `rest.len()` bytes.
            match unsafe { libc::read(self.fds[1], rest.as_mut_ptr().cast(), rest.len()) } {
                n if n > 0 => got += n as usize,
                n if n < 0 && interrupted() => {}
                _ => return Err(Fail::Io), // error, or EOF: the peer is gone
            }
        }
        verify(&self.buf, seed)
    }

    /// A blocked read cannot time out, so the child re-arms a 60 s SIGALRM
    /// every 1024 rounds: a stuck child dies and the parent then reads EOF.
    fn child_tick(&mut self, k: u32) {
        if k % 1024 == 1 {
            // SAFETY: only (re)arms this process's alarm timer.
            unsafe { libc::alarm(60) };
        }
    }

    fn abandon(mut self) {
        self.close_fds();
        std::mem::forget(self);
    }
}

impl FdLink {
    fn close_fds(&mut self) {
        let [tx, rx] = std::mem::replace(&mut self.fds, [-1, -1]);
        // SAFETY: the fds belong to this link, which no longer refers to them.
        unsafe { (libc::close(tx), rx != tx && libc::close(rx) == 0) };
    }
}

impl Drop for FdLink {
    fn drop(&mut self) {
        self.close_fds();
    }
}

/// Two pipes, one per direction.
pub fn pipe_pingpong(payload: usize, iters: usize, warmup: usize) -> Samples {
    let mut fds = [[0; 2]; 2];
    for p in &mut fds {
        // SAFETY: `p` is a valid out array of two fds.
        let r = unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) };
        assert_eq!(r, 0, "pipe2: {}", io::Error::last_os_error());
        // Best effort 1 MiB pipes (default 64 KiB): fewer wake-ups per large
        // payload, which favours this baseline.
        // SAFETY: fcntl on a pipe fd we own.
        unsafe { libc::fcntl(p[1], libc::F_SETPIPE_SZ, 1 << 20) };
    }
    let [[p2c_r, p2c_w], [c2p_r, c2p_w]] = fds;
    let (parent, child) = (
        fd_link(p2c_w, c2p_r, payload),
        fd_link(c2p_w, p2c_r, payload),
    );
    run("pipe", parent, child, iters, warmup)
}

/// `socketpair(AF_UNIX, SOCK_STREAM)`, same protocol as the pipes.
pub fn unix_socket_pingpong(payload: usize, iters: usize, warmup: usize) -> Samples {
    let mut sv = [0; 2];
    let kind = libc::SOCK_STREAM | libc::SOCK_CLOEXEC;
    // SAFETY: `sv` is a valid out array of two fds.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, kind, 0, sv.as_mut_ptr()) };
    assert_eq!(r, 0, "socketpair: {}", io::Error::last_os_error());
    // Best effort 4 MiB buffers (the *FORCE options pass the sysctl caps when
    // privileged), which favours this baseline.
    let (size, len) = (4 << 20, size_of::<libc::c_int>() as libc::socklen_t);
    let opts = [
        libc::SO_SNDBUF,
        libc::SO_RCVBUF,
        libc::SO_SNDBUFFORCE,
        libc::SO_RCVBUFFORCE,
    ];
    for (fd, opt) in sv.into_iter().flat_map(|fd| opts.map(|opt| (fd, opt))) {
        let val: *const libc::c_int = &size;
        // SAFETY: `val` points to a live c_int and `len` is its size.
        unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, opt, val.cast(), len) };
    }
    let (parent, child) = (
        fd_link(sv[0], sv[0], payload),
        fd_link(sv[1], sv[1], payload),
    );
    run("unix_socket", parent, child, iters, warmup)
}

/// Two threads passing one pre-allocated buffer over `bounded(1)` channels;
/// each side writes it fully before sending and reads it fully on receipt.
pub fn crossbeam_pingpong(payload: usize, iters: usize, warmup: usize) -> Samples {
    let (ping_tx, ping_rx) = crossbeam_channel::bounded::<(u32, Box<[u8]>)>(1);
    let (pong_tx, pong_rx) = crossbeam_channel::bounded::<(u32, Box<[u8]>)>(1);
    let total = u32::try_from(iters + warmup).expect("too many iterations");
    let mut samples = Vec::with_capacity(iters);
    std::thread::scope(|s| {
        s.spawn(move || {
            let _pin = PinGuard::new(&PIN_CHILD);
            for (k, mut buf) in ping_rx {
                verify(&buf, ping_seed(k)).expect("crossbeam: corrupt ping");
                fill(&mut buf, pong_seed(k));
                if pong_tx.send((k, buf)).is_err() {
                    break;
                }
            }
        });
        let _pin = PinGuard::new(&PIN_PARENT);
        let mut spare = Some(vec![0u8; payload].into_boxed_slice());
        for k in 1..=total {
            let t0 = Instant::now();
            let mut buf = spare.take().expect("the buffer came back");
            fill(&mut buf, ping_seed(k));
            ping_tx.send((k, buf)).expect("crossbeam: peer gone");
            let (_, buf) = pong_rx.recv().expect("crossbeam: peer gone");
            verify(&buf, pong_seed(k)).expect("crossbeam: corrupt pong");
            let dt = t0.elapsed();
            spare = Some(buf);
            if k as usize > warmup {
                samples.push(dt.as_nanos() as u64);
            }
        }
        drop((ping_tx, pong_rx)); // ends the peer's loop
    });
    Samples(samples)
}

/// Two `memcpy`s of `payload` bytes (one per direction) between four distinct
/// buffers of distinct bytes, hidden from the optimiser with `black_box`.
pub fn memcpy_pair(payload: usize, iters: usize, warmup: usize) -> Samples {
    let [a, mut b, c, mut d] = [1, 2, 3, 4].map(|seed| {
        let mut v = vec![0u8; payload];
        fill(&mut v, seed << 40);
        v
    });
    let mut samples = Vec::with_capacity(iters);
    for i in 0..iters + warmup {
        let t0 = Instant::now();
        black_box(&mut b[..]).copy_from_slice(black_box(&a[..]));
        black_box(&mut d[..]).copy_from_slice(black_box(&c[..]));
        black_box((&b, &d));
        let dt = t0.elapsed();
        if i >= warmup {
            samples.push(dt.as_nanos() as u64);
        }
    }
    assert!(a == b && c == d, "memcpy_pair: copies differ");
    Samples(samples)
}

/// The work of one round trip without a second core: `fill` then `verify`
/// a ping buffer, then the same for a pong buffer, on this thread. What every
/// cross-process row adds to this is the cost of moving the bytes between
/// cores.
pub fn local_fill_verify(payload: usize, iters: usize, warmup: usize) -> Samples {
    let (mut ping, mut pong) = (vec![0u8; payload], vec![0u8; payload]);
    let mut samples = Vec::with_capacity(iters);
    for k in 1..=(iters + warmup) as u32 {
        let t0 = Instant::now();
        fill(black_box(&mut ping[..]), ping_seed(k));
        verify(black_box(&ping[..]), ping_seed(k)).expect("local: corrupt ping");
        fill(black_box(&mut pong[..]), pong_seed(k));
        verify(black_box(&pong[..]), pong_seed(k)).expect("local: corrupt pong");
        let dt = t0.elapsed();
        if k as usize > warmup {
            samples.push(dt.as_nanos() as u64);
        }
    }
    Samples(samples)
}

/// Cost of the two `Instant::now()` calls included in every sample.
pub fn timer_overhead(iters: usize) -> Samples {
    let once = |_| black_box(Instant::now()).elapsed().as_nanos() as u64;
    Samples((0..iters).map(once).collect())
}

/// Messages per second streaming `[u8; 64]` one way over `bounded(1024)`
/// between two threads; the producer writes and the receiver sums every byte.
pub fn crossbeam_throughput(msgs: usize) -> f64 {
    let (tx, rx) = crossbeam_channel::bounded::<[u8; 64]>(1024);
    let start = Barrier::new(2);
    std::thread::scope(|s| {
        s.spawn(|| {
            let _pin = PinGuard::new(&PIN_CHILD);
            start.wait();
            for i in 0..msgs as u64 {
                let mut m = [0u8; 64];
                fill(&mut m, i);
                if tx.send(m).is_err() {
                    break;
                }
            }
            drop(tx);
        });
        let _pin = PinGuard::new(&PIN_PARENT);
        start.wait();
        let t0 = Instant::now();
        let mut seeds = 0..msgs as u64;
        let good = rx
            .iter()
            .all(|m| seeds.next().is_some_and(|i| verify(&m, i).is_ok()));
        let secs = t0.elapsed().as_secs_f64();
        drop(rx); // unblocks the producer if we stopped early
        assert!(
            good && seeds.next().is_none(),
            "crossbeam_throughput: lost or corrupt messages"
        );
        msgs as f64 / secs
    })
}
