//! Named services in one process: the API, every connect error, hostile
//! servers (the client's checks of the handshake and the segment), hostile
//! clients (the server keeps serving a good one), and a leak check.
//!
//! Hostile peers are written with raw `libc` socket calls, so they can send
//! what remora never would. Every test holds `SERIAL` (descriptor and
//! mapping counts are per process) and runs under a watchdog.

mod common;

use common::service::{footprint, serve_echo};

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::Watchdog;
use remora::{
    ChannelConfig, ConnectOptions, OpenError, RecvError, Service, ServiceConnection, ServiceError,
    ServiceOptions, WaitStrategy,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A service name unique to this process and test.
fn unique(label: &str) -> String {
    format!("t{}-{label}", std::process::id())
}

fn uid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

fn echo_config() -> Vec<ChannelConfig> {
    vec![
        ChannelConfig::new("echo")
            .capacity(4096)
            .wait_strategy(WaitStrategy::Block),
    ]
}

/// One good client round: connect, `rounds` echoes, drop.
fn good_client(name: &str, rounds: u32) -> Result<(), ServiceError> {
    let conn = remora::connect_service_timeout(name, Duration::from_secs(10))?;
    let (mut tx, mut rx) = conn.raw_channel("echo").unwrap();
    for i in 0..rounds {
        let msg = i.to_le_bytes();
        tx.send(&msg).unwrap();
        assert_eq!(&*rx.recv_timeout(Duration::from_secs(10)).unwrap(), &msg);
    }
    Ok(())
}

#[test]
fn typed_and_raw_channels_over_an_accepted_connection() {
    let _s = serial();
    let _w = Watchdog::new("typed and raw", Duration::from_secs(60));
    let name = unique("api");
    let configs = [
        ChannelConfig::new("typed").capacity(4096),
        ChannelConfig::new("raw").capacity(4096),
        ChannelConfig::new("oneway").capacity(4096),
    ];
    let mut service = Service::bind(&name, &configs).unwrap();
    let client_name = name.clone();
    let client = thread::spawn(move || {
        let conn = remora::connect_service(&client_name).unwrap();
        assert_eq!(
            conn.channel_names().collect::<Vec<_>>(),
            ["typed", "raw", "oneway"]
        );
        assert_eq!(conn.peer_uid(), uid());
        assert_eq!(conn.peer_pid() as u32, std::process::id());
        let (mut tx, mut rx) = conn.channel::<String, u64>("typed").unwrap();
        assert_eq!(rx.receive_mode(), remora::ReceiveMode::Copy);
        tx.send(&"hello".to_owned()).unwrap();
        assert_eq!(rx.recv().unwrap().to_native(), 5);
        let (mut rtx, mut rrx) = conn.raw_channel("raw").unwrap();
        rtx.send(b"raw bytes").unwrap();
        assert_eq!(&*rrx.recv().unwrap(), b"RAW BYTES");
        let mut log = conn.receiver::<u32>("oneway").unwrap();
        assert_eq!(log.recv().unwrap().to_native(), 7);
        assert_eq!(log.recv().unwrap_err(), RecvError::Disconnected);
    });
    let conn = service.accept().unwrap();
    assert_eq!(conn.peer_uid(), uid());
    let (mut tx, mut rx) = conn.channel::<u64, String>("typed").unwrap();
    assert_eq!(rx.receive_mode(), remora::ReceiveMode::Copy);
    let len = rx.recv().unwrap().len() as u64;
    tx.send(&len).unwrap();
    let (mut rtx, mut rrx) = conn.raw_channel("raw").unwrap();
    let upper = rrx.recv().unwrap().to_ascii_uppercase();
    rtx.send(&upper).unwrap();
    let mut log = conn.sender::<u32>("oneway").unwrap();
    log.send(&7).unwrap();
    drop(log);
    client.join().unwrap();
    // A type disagreement is caught as on any segment.
    let other = name.clone();
    let t = thread::spawn(move || {
        let conn = remora::connect_service(&other).unwrap();
        let _ends = conn.channel::<u8, u8>("typed").unwrap();
        thread::sleep(Duration::from_millis(200));
    });
    let conn = service.accept().unwrap();
    thread::sleep(Duration::from_millis(50));
    assert!(matches!(
        conn.channel::<u64, u64>("typed"),
        Err(remora::ChannelError::TypeMismatch { .. })
    ));
    t.join().unwrap();
}

#[test]
fn each_client_gets_its_own_segment() {
    let _s = serial();
    let _w = Watchdog::new("own segment", Duration::from_secs(60));
    let name = unique("own");
    let mut service = Service::bind(&name, &echo_config()).unwrap();
    let clients: Vec<_> = (0..4u8)
        .map(|i| {
            let name = name.clone();
            thread::spawn(move || {
                let conn = remora::connect_service(&name).unwrap();
                let (mut tx, mut rx) = conn.raw_channel("echo").unwrap();
                tx.send(&[i; 8]).unwrap();
                // Each client hears only its own message back.
                assert_eq!(&*rx.recv().unwrap(), &[i; 8]);
            })
        })
        .collect();
    let servers: Vec<_> = (0..4)
        .map(|_| {
            let conn = service.accept().unwrap();
            thread::spawn(move || serve_echo(conn))
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    for s in servers {
        assert_eq!(s.join().unwrap(), 1);
    }
}

#[test]
fn connect_errors() {
    let _s = serial();
    let _w = Watchdog::new("connect errors", Duration::from_secs(60));
    let short = Duration::from_millis(300);
    // No such service.
    let name = unique("nobody");
    assert!(matches!(
        remora::connect_service_timeout(&name, short),
        Err(ServiceError::NoSuchService { name: n }) if n == name
    ));
    // Invalid names, on both sides.
    assert!(matches!(
        remora::connect_service("a/b"),
        Err(ServiceError::InvalidName { .. })
    ));
    assert!(matches!(
        Service::bind("", &echo_config()),
        Err(ServiceError::InvalidName { .. })
    ));
    // Invalid channel configuration.
    assert!(matches!(
        Service::bind(&unique("cfg"), &[ChannelConfig::new("c").capacity(1000)]),
        Err(ServiceError::Segment(OpenError::InvalidConfig { .. }))
    ));
    // Name in use, and free again once the service is dropped.
    let name = unique("inuse");
    let service = Service::bind(&name, &echo_config()).unwrap();
    assert!(matches!(
        Service::bind(&name, &echo_config()),
        Err(ServiceError::NameInUse { .. })
    ));
    drop(service);
    let mut service = Service::bind(&name, &echo_config()).unwrap();
    // Nobody accepting: the handshake times out.
    let start = Instant::now();
    assert!(matches!(
        remora::connect_service_timeout(&name, short),
        Err(ServiceError::Timeout)
    ));
    assert!(start.elapsed() >= short);
    assert!(matches!(
        service.accept_timeout(Duration::from_millis(20)),
        Err(ServiceError::Timeout)
    ));
    assert!(service.try_accept().unwrap().is_none());

    // Permission denied: a service that admits another uid only.
    let name = unique("perm");
    let mut service = Service::bind_with(
        &name,
        &echo_config(),
        ServiceOptions::new().same_uid(false).allow_uid(uid() ^ 1),
    )
    .unwrap();
    let client =
        thread::spawn(move || remora::connect_service_timeout(&name, Duration::from_secs(10)));
    let _ = service.accept_timeout(Duration::from_millis(300));
    assert!(matches!(
        client.join().unwrap(),
        Err(ServiceError::PermissionDenied)
    ));
    // ... and one admitting our gid (not our uid) lets us in.
    let name = unique("gid");
    // SAFETY: getegid has no preconditions.
    let gid = unsafe { libc::getegid() };
    let mut service = Service::bind_with(
        &name,
        &echo_config(),
        ServiceOptions::new().same_uid(false).allow_gid(gid),
    )
    .unwrap();
    let client = thread::spawn(move || good_client(&name, 3));
    let server = thread::spawn(move || serve_echo(service.accept().unwrap()));
    client.join().unwrap().unwrap();
    assert_eq!(server.join().unwrap(), 3);
}

#[test]
fn server_full_until_a_slot_frees() {
    let _s = serial();
    let _w = Watchdog::new("server full", Duration::from_secs(60));
    let name = unique("full");
    let mut service =
        Service::bind_with(&name, &echo_config(), ServiceOptions::new().max_clients(2)).unwrap();
    let (a, b) = {
        let n1 = name.clone();
        let n2 = name.clone();
        let t1 = thread::spawn(move || remora::connect_service(&n1).unwrap());
        let t2 = thread::spawn(move || remora::connect_service(&n2).unwrap());
        let s1 = service.accept().unwrap();
        let s2 = service.accept().unwrap();
        ((t1.join().unwrap(), s1), (t2.join().unwrap(), s2))
    };
    assert_eq!(service.clients(), 2);
    let try_third = |service: &mut Service| {
        let n = name.clone();
        let t = thread::spawn(move || remora::connect_service_timeout(&n, Duration::from_secs(10)));
        let accepted = service.accept_timeout(Duration::from_millis(300));
        (t.join().unwrap(), accepted)
    };
    let (third, accepted) = try_third(&mut service);
    assert!(matches!(third, Err(ServiceError::ServerFull)), "{third:?}");
    assert!(matches!(accepted, Err(ServiceError::Timeout)));
    // The client of `a` leaves (drops its connection, never took a
    // channel): its slot frees although the server still holds its side.
    drop(a.0);
    assert_eq!(service.clients(), 1);
    let (third, accepted) = try_third(&mut service);
    assert!(third.is_ok() && accepted.is_ok());
    drop((third, accepted));
    // The server drops its side of `b`: that frees a slot too.
    drop(b.1);
    let (third, accepted) = try_third(&mut service);
    assert!(third.is_ok() && accepted.is_ok());
    drop(b.0);
    drop(a.1);
}

/// A client that answered in time is taken even if the server only reads
/// its answer after the handshake timeout (a busy server), and the client
/// waits for the server's confirmation rather than returning a connection
/// the server may still drop. Without the last look the pending client was
/// dropped and connect failed.
#[test]
fn an_answer_queued_before_the_timeout_still_counts() {
    let _s = serial();
    let _w = Watchdog::new("late read", Duration::from_secs(60));
    let name = unique("lateread");
    let mut service = Service::bind_with(
        &name,
        &echo_config(),
        ServiceOptions::new().handshake_timeout(Duration::from_millis(100)),
    )
    .unwrap();
    let n = name.clone();
    let client = thread::spawn(move || good_client(&n, 3));
    // Send the welcome, then be busy past the handshake timeout.
    while service.clients() == 0 {
        assert!(service.try_accept().unwrap().is_none());
        thread::sleep(Duration::from_millis(1));
    }
    thread::sleep(Duration::from_millis(300));
    let conn = service.accept_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(serve_echo(conn), 3);
    client.join().unwrap().unwrap();
}

#[test]
fn a_slot_frees_when_the_client_process_dies_and_ends_see_it() {
    let _s = serial();
    let _w = Watchdog::new("client death", Duration::from_secs(60));
    let name = unique("death");
    let mut service = Service::bind(&name, &echo_config()).unwrap();
    let mut child = common::self_command("connect_and_hang")
        .env("SVC_NAME", &name)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let conn = service.accept_timeout(Duration::from_secs(20)).unwrap();
    assert_eq!(conn.peer_pid() as u32, pid);
    let (_tx, mut rx) = conn.raw_channel("echo").unwrap();
    assert_eq!(&*rx.recv().unwrap(), b"attached");
    assert_eq!(service.clients(), 1);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap_err(),
        RecvError::Disconnected
    );
    assert_eq!(service.clients(), 0);
}

/// Child roles for the tests above.
#[test]
fn child_entry() {
    let Some(role) = common::role() else { return };
    let _w = Watchdog::new("service child", Duration::from_secs(60));
    let name = std::env::var("SVC_NAME").unwrap();
    match role.as_str() {
        "connect_and_hang" => {
            let conn = remora::connect_service(&name).unwrap();
            let (mut tx, _rx) = conn.raw_channel("echo").unwrap();
            tx.send(b"attached").unwrap();
            loop {
                thread::sleep(Duration::from_secs(1));
            }
        }
        "squatter" => {
            let victim: u32 = std::env::var("SVC_VICTIM_UID").unwrap().parse().unwrap();
            let _listener = raw_listener_of(victim, &name);
            println!("SQUATTING");
            loop {
                thread::sleep(Duration::from_secs(1));
            }
        }
        "foreign_client" => {
            let server: u32 = std::env::var("SVC_SERVER_UID").unwrap().parse().unwrap();
            let options = ConnectOptions::new()
                .timeout(Duration::from_secs(20))
                .server_uid(server);
            match options.connect(&name) {
                Err(ServiceError::PermissionDenied) => println!("PERMISSION_DENIED"),
                Ok(conn) => {
                    let (mut tx, mut rx) = conn.raw_channel("echo").unwrap();
                    for i in 0..5u8 {
                        tx.send(&[i; 16]).unwrap();
                        assert_eq!(&*rx.recv().unwrap(), &[i; 16]);
                    }
                    println!("SERVED");
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        "open_and_hang" => {
            let conn = remora::connect_service(&name).unwrap();
            let (mut tx, _rx) = conn.open_raw_channel(ChannelConfig::new("late")).unwrap();
            tx.send(b"late").unwrap();
            loop {
                thread::sleep(Duration::from_secs(1));
            }
        }
        other => panic!("unknown role {other}"),
    }
}

// ---------------------------------------------------------------------------
// Channels opened at run time.
// ---------------------------------------------------------------------------

#[test]
fn channels_opened_at_run_time_both_ways_with_refusals() {
    let _s = serial();
    let _w = Watchdog::new("run-time channels", Duration::from_secs(60));
    let before = footprint();
    let name = unique("runtime");
    let mut service = Service::bind(&name, &echo_config()).unwrap();
    let n = name.clone();
    let client = thread::spawn(move || {
        let conn = remora::connect_service(&n).unwrap();
        // Opened here, with its own capacity.
        let (mut tx, mut rx) = conn
            .open_channel::<String, u64>(ChannelConfig::new("len").capacity(8192))
            .unwrap();
        assert_eq!(tx.capacity(), 8192);
        tx.send(&"abcd".to_owned()).unwrap();
        assert_eq!(rx.recv().unwrap().to_native(), 4);
        // Opened by the server, accepted here.
        let opened = conn
            .accept_channel_timeout(Duration::from_secs(10))
            .unwrap();
        assert_eq!(opened.name(), "push");
        let (_t, mut r) = opened.raw_channel().unwrap();
        assert_eq!(&*r.recv().unwrap(), b"pushed");
        assert_eq!(r.receive_mode(), remora::ReceiveMode::Copy);
        // Names already used on this connection are refused here.
        for dup in ["len", "push", "echo"] {
            assert!(matches!(
                conn.open_raw_channel(ChannelConfig::new(dup)),
                Err(ServiceError::ChannelRefused {
                    reason: "duplicate name"
                })
            ));
        }
        // An invalid configuration never leaves this side.
        assert!(matches!(
            conn.open_raw_channel(ChannelConfig::new("bad").capacity(1000)),
            Err(ServiceError::Segment(OpenError::InvalidConfig { .. }))
        ));
        // The server takes two run-time channels at most: "a" is its second.
        let (mut a, _) = conn.open_raw_channel(ChannelConfig::new("a")).unwrap();
        a.send(b"a").unwrap();
        assert!(matches!(
            conn.open_raw_channel(ChannelConfig::new("b")),
            Err(ServiceError::ChannelRefused { reason: "limit" })
        ));
    });
    let conn = service.accept().unwrap();
    conn.set_channel_limit(2);
    let opened = conn.accept_channel().unwrap();
    assert_eq!(opened.name(), "len");
    let (mut tx, mut rx) = opened.channel::<u64, String>().unwrap();
    let len = rx.recv().unwrap().len() as u64;
    tx.send(&len).unwrap();
    let (mut push, _) = conn
        .open_raw_channel(ChannelConfig::new("push").capacity(4096))
        .unwrap();
    push.send(b"pushed").unwrap();
    let a = conn
        .accept_channel_timeout(Duration::from_secs(10))
        .unwrap();
    assert_eq!(&*a.raw_channel().unwrap().1.recv().unwrap(), b"a");
    // "b" is refused inside this wait (limit), then the client leaves: the
    // control channel reports it.
    assert!(matches!(
        conn.accept_channel_timeout(Duration::from_secs(10)),
        Err(ServiceError::Disconnected)
    ));
    client.join().unwrap();
    drop((opened, a, tx, rx, push, conn, service));
    assert_eq!(footprint(), before);
}

/// A request waits until the peer looks (`accept_channel`): an open nobody
/// accepts in time is `Timeout`, and if the peer accepts it later, its ends
/// find the opener's side hung up.
#[test]
fn an_open_nobody_accepts_times_out() {
    let _s = serial();
    let _w = Watchdog::new("run-time open timeout", Duration::from_secs(60));
    let name = unique("rttimeout");
    let mut service = Service::bind(&name, &echo_config()).unwrap();
    let n = name.clone();
    let client = thread::spawn(move || {
        let conn = remora::connect_service(&n).unwrap();
        let e = conn
            .open_channel_timeout::<u8, u8>(ChannelConfig::new("late"), Duration::from_millis(200))
            .map(drop);
        assert!(matches!(e, Err(ServiceError::Timeout)), "{e:?}");
        conn
    });
    let conn = service.accept().unwrap();
    let client_conn = client.join().unwrap();
    let opened = conn
        .try_accept_channel()
        .unwrap()
        .expect("the stale request");
    let (_tx, mut rx) = opened.raw_channel().unwrap();
    assert_eq!(rx.recv().unwrap_err(), RecvError::Disconnected);
    assert!(conn.try_accept_channel().unwrap().is_none());
    drop(client_conn);
}

#[test]
fn a_run_time_channel_reports_the_peers_death() {
    let _s = serial();
    let _w = Watchdog::new("run-time channel death", Duration::from_secs(60));
    let name = unique("rtdeath");
    let mut service = Service::bind(&name, &echo_config()).unwrap();
    let mut child = common::self_command("open_and_hang")
        .env("SVC_NAME", &name)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let conn = service.accept_timeout(Duration::from_secs(20)).unwrap();
    let opened = conn
        .accept_channel_timeout(Duration::from_secs(20))
        .unwrap();
    let (_tx, mut rx) = opened.raw_channel().unwrap();
    assert_eq!(&*rx.recv().unwrap(), b"late");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap_err(),
        RecvError::Disconnected
    );
    assert!(matches!(
        conn.accept_channel_timeout(Duration::from_secs(10)),
        Err(ServiceError::Disconnected)
    ));
}

/// A raw client finishes the handshake by hand (claims the segment with a
/// plain store), then opens a run-time channel with an unsealed memfd: the
/// server refuses it ("invalid") and keeps the connection; garbage then
/// closes the control channel.
#[test]
fn a_hostile_run_time_channel_is_refused() {
    let _s = serial();
    let _w = Watchdog::new("hostile run-time channel", Duration::from_secs(60));
    let before = footprint();
    let name = unique("rthostile");
    let mut service = Service::bind(&name, &echo_config()).unwrap();
    let n = name.clone();
    let client = thread::spawn(move || {
        let s = raw_connect(&n);
        let fd = raw_read_welcome(&s).unwrap();
        // SAFETY: maps the (sealed, fixed-size) segment we were sent.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        // SAFETY: `opener_alive` is the aligned u32 at offset 40 of the
        // header; "alive, no sentinel" (0x3fffffff).
        unsafe {
            (*base
                .cast::<u8>()
                .add(40)
                .cast::<std::sync::atomic::AtomicU32>())
            .store(0x3fff_ffff, Ordering::SeqCst)
        };
        raw_send(&s, &attached(), &[]);
        // The server confirms the connection.
        let mut confirmed = [0u8; 32];
        // SAFETY: `confirmed` is writable.
        let got = unsafe { libc::recv(s.as_raw_fd(), confirmed.as_mut_ptr().cast(), 32, 0) };
        assert_eq!(got, 32);
        assert_eq!(u32::from_le_bytes(confirmed[8..12].try_into().unwrap()), 7);
        let unsealed = memfd(3 * 4096, 0);
        let mut open = welcome(1, 9, 3 * 4096);
        open[8..12].copy_from_slice(&4u32.to_le_bytes());
        raw_send(&s, &open, &[unsealed.as_raw_fd()]);
        // The answer: open-refused, id 9, reason 3 (invalid).
        let mut answer = [0u8; 32];
        // SAFETY: `answer` is writable.
        let got = unsafe { libc::recv(s.as_raw_fd(), answer.as_mut_ptr().cast(), 32, 0) };
        assert_eq!(got, 32);
        assert_eq!(u32::from_le_bytes(answer[8..12].try_into().unwrap()), 6);
        assert_eq!(u32::from_le_bytes(answer[12..16].try_into().unwrap()), 9);
        assert_eq!(answer[16], 3);
        raw_send(&s, b"garbage garbage garbage garbage!", &[]);
        thread::sleep(Duration::from_millis(200));
        // SAFETY: the mapping made above.
        unsafe { libc::munmap(base, 4096) };
    });
    let conn = service.accept_timeout(Duration::from_secs(20)).unwrap();
    let e = conn.accept_channel_timeout(Duration::from_secs(20));
    assert!(matches!(e, Err(ServiceError::Disconnected)), "{e:?}");
    client.join().unwrap();
    drop((conn, service));
    assert_eq!(footprint(), before);
}

// ---------------------------------------------------------------------------
// Hostile servers: raw sockets that send what remora never would.
// ---------------------------------------------------------------------------

fn cvt(ret: libc::c_int) -> libc::c_int {
    assert!(ret >= 0, "{}", std::io::Error::last_os_error());
    ret
}

fn abstract_addr(name: &str) -> (libc::sockaddr_un, libc::socklen_t) {
    abstract_addr_of(uid(), name)
}

/// The address of user `owner`'s service `name`.
fn abstract_addr_of(owner: u32, name: &str) -> (libc::sockaddr_un, libc::socklen_t) {
    let path = format!("remora.{owner}.{name}");
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path[1..].iter_mut().zip(path.bytes()) {
        *d = s as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + path.len();
    (addr, len as libc::socklen_t)
}

fn seqpacket() -> OwnedFd {
    // SAFETY: plain syscall.
    let fd =
        cvt(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) });
    // SAFETY: fresh descriptor.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A raw listener on service `name`'s address.
fn raw_listener(name: &str) -> OwnedFd {
    raw_listener_of(uid(), name)
}

/// A raw listener on user `owner`'s service `name`'s address.
fn raw_listener_of(owner: u32, name: &str) -> OwnedFd {
    let fd = seqpacket();
    let (addr, len) = abstract_addr_of(owner, name);
    // SAFETY: valid address for the call.
    cvt(unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) });
    // SAFETY: plain syscall.
    cvt(unsafe { libc::listen(fd.as_raw_fd(), 16) });
    fd
}

/// A raw client connected to service `name`.
fn raw_connect(name: &str) -> OwnedFd {
    let fd = seqpacket();
    let (addr, len) = abstract_addr(name);
    // SAFETY: valid address for the call.
    cvt(unsafe { libc::connect(fd.as_raw_fd(), (&raw const addr).cast(), len) });
    fd
}

fn raw_accept(listener: &OwnedFd) -> OwnedFd {
    // SAFETY: null address pointers are allowed.
    let fd = cvt(unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    });
    // SAFETY: fresh descriptor.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// `sendmsg` of `data` with `fds` attached; returns the result.
fn raw_send(sock: &OwnedFd, data: &[u8], fds: &[RawFd]) -> isize {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr().cast_mut().cast(),
        iov_len: data.len(),
    };
    let payload = std::mem::size_of_val(fds) as u32;
    // SAFETY: arithmetic.
    let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: all-zero msghdr is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the buffer holds one header with `payload` bytes.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(payload) as _;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(c),
                payload as usize,
            );
        }
    }
    // SAFETY: `msg` points at live buffers.
    unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) }
}

/// The server's welcome as remora encodes it (wire.rs), with a chosen
/// version, channel count and size.
fn welcome(version: u32, channels: u32, size: u64) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[0..4].copy_from_slice(b"RMSV");
    m[4..8].copy_from_slice(&version.to_le_bytes());
    m[8..12].copy_from_slice(&1u32.to_le_bytes());
    m[12..16].copy_from_slice(&channels.to_le_bytes());
    m[16..24].copy_from_slice(&size.to_le_bytes());
    m
}

fn memfd(size: i64, seals: i32) -> OwnedFd {
    // SAFETY: valid C string, plain syscall.
    let fd = cvt(unsafe {
        libc::memfd_create(
            c"remora-hostile".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    });
    // SAFETY: fresh descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: plain syscalls on our descriptor.
    unsafe {
        cvt(libc::ftruncate(fd.as_raw_fd(), size));
        if seals != 0 {
            cvt(libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals));
        }
    }
    fd
}

const SEALS: i32 = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

/// Runs a hostile server that answers one client with `act`, connects a
/// client to it, and returns the client's result. Checks that no
/// descriptor or mapping is left behind by the refused handshake.
fn against_hostile_server(
    label: &str,
    act: impl FnOnce(&OwnedFd) + Send + 'static,
) -> Result<ServiceConnection, ServiceError> {
    let before = footprint();
    let name = unique(label);
    let listener = raw_listener(&name);
    let server = thread::spawn(move || {
        let sock = raw_accept(&listener);
        act(&sock);
        // Keep the socket open until the client is done with it.
        thread::sleep(Duration::from_millis(100));
    });
    let result = remora::connect_service_timeout(&name, Duration::from_millis(1500));
    server.join().unwrap();
    if result.is_err() {
        assert_eq!(footprint(), before, "{label}: something was left behind");
    }
    result
}

#[test]
fn hostile_servers_are_refused_with_distinct_errors() {
    let _s = serial();
    let _w = Watchdog::new("hostile servers", Duration::from_secs(120));
    let size = 3 * 4096;
    let seg = |e: Result<ServiceConnection, ServiceError>| match e {
        Err(ServiceError::Segment(e)) => e,
        other => panic!("expected a segment error, got {other:?}"),
    };

    // A pipe: not a regular file.
    let e = against_hostile_server("pipe", move |s| {
        let mut p = [0; 2];
        // SAFETY: room for two descriptors.
        cvt(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) });
        raw_send(s, &welcome(1, 1, size), &[p[0]]);
        // SAFETY: ours to close.
        unsafe { libc::close(p[0]) };
        // SAFETY: as above.
        unsafe { libc::close(p[1]) };
    });
    assert!(matches!(seg(e), OpenError::NotMemfd { .. }));

    // A regular file that cannot carry seals (O_TMPFILE: leaves nothing).
    let e = against_hostile_server("tmpfile", move |s| {
        // SAFETY: valid path, plain syscall.
        let fd = cvt(unsafe {
            libc::open(
                c"/tmp".as_ptr(),
                libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
                0o600,
            )
        });
        // SAFETY: ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: plain syscall.
        cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), size as i64) });
        raw_send(s, &welcome(1, 1, size), &[fd.as_raw_fd()]);
    });
    assert!(matches!(seg(e), OpenError::NotMemfd { .. }));

    // A memfd without seals, and one sealed against shrinking only.
    for (label, seals) in [("noseals", 0), ("shrinkonly", libc::F_SEAL_SHRINK)] {
        let e = against_hostile_server(label, move |s| {
            let fd = memfd(size as i64, seals);
            raw_send(s, &welcome(1, 1, size), &[fd.as_raw_fd()]);
        });
        match seg(e) {
            OpenError::MissingSeals { found, required } => {
                assert_eq!(found & SEALS as u32, seals as u32);
                assert_eq!(required, SEALS as u32);
            }
            other => panic!("{label}: {other:?}"),
        }
    }

    // Sealed, but not the size announced.
    let e = against_hostile_server("size", move |s| {
        let fd = memfd(size as i64, SEALS);
        raw_send(s, &welcome(1, 1, size * 2), &[fd.as_raw_fd()]);
    });
    assert!(matches!(
        seg(e),
        OpenError::BadSize { actual, recorded } if actual == size && recorded == size * 2
    ));

    // Sealed, right size, garbage inside: the layout checks refuse it.
    let e = against_hostile_server("garbage-segment", move |s| {
        let fd = memfd(size as i64, SEALS);
        raw_send(s, &welcome(1, 1, size), &[fd.as_raw_fd()]);
    });
    assert!(matches!(seg(e), OpenError::BadMagic { .. }));

    // Two descriptors.
    let e = against_hostile_server("twofds", move |s| {
        let a = memfd(size as i64, SEALS);
        let b = memfd(size as i64, SEALS);
        raw_send(s, &welcome(1, 1, size), &[a.as_raw_fd(), b.as_raw_fd()]);
    });
    assert!(
        matches!(e, Err(ServiceError::ExtraDescriptors { count: 2 })),
        "{e:?}"
    );

    // Far more descriptors than fit: MSG_CTRUNC.
    let e = against_hostile_server("ctrunc", move |s| {
        let fds: Vec<OwnedFd> = (0..40).map(|_| memfd(4096, SEALS)).collect();
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        raw_send(s, &welcome(1, 1, size), &raw);
    });
    assert!(matches!(e, Err(ServiceError::ControlTruncated)), "{e:?}");

    // A welcome without a descriptor.
    let e = against_hostile_server("nofd", move |s| {
        raw_send(s, &welcome(1, 1, size), &[]);
    });
    assert!(matches!(e, Err(ServiceError::MissingDescriptor)), "{e:?}");

    // Another protocol version.
    let e = against_hostile_server("version", move |s| {
        let fd = memfd(size as i64, SEALS);
        raw_send(s, &welcome(99, 1, size), &[fd.as_raw_fd()]);
    });
    assert!(
        matches!(
            e,
            Err(ServiceError::VersionMismatch {
                found: 99,
                expected: 1
            })
        ),
        "{e:?}"
    );

    // Garbage bytes, a short message, a long one.
    for (label, bytes) in [
        (
            "garbage",
            b"GET / HTTP/1.1\r\nHost: remora\r\n\r\n".to_vec(),
        ),
        ("short", welcome(1, 1, size)[..20].to_vec()),
        ("long", [welcome(1, 1, size).as_slice(), &[0; 40]].concat()),
    ] {
        let e = against_hostile_server(label, move |s| {
            raw_send(s, &bytes, &[]);
        });
        assert!(
            matches!(e, Err(ServiceError::Protocol { .. })),
            "{label}: {e:?}"
        );
    }

    // Hang-up before any message; silence until the timeout.
    let e = against_hostile_server("hangup", |_| {});
    assert!(matches!(e, Err(ServiceError::Protocol { .. })), "{e:?}");
    let e = against_hostile_server("silent", |_| thread::sleep(Duration::from_millis(1700)));
    assert!(matches!(e, Err(ServiceError::Timeout)), "{e:?}");
}

#[test]
fn server_uid_picks_whose_service_to_reach() {
    let _s = serial();
    let _w = Watchdog::new("server uid", Duration::from_secs(60));
    let name = unique("trust");
    let mut service = Service::bind(&name, &echo_config()).unwrap();
    // Another user's service of that name: nobody runs it.
    assert!(matches!(
        ConnectOptions::new()
            .timeout(Duration::from_millis(300))
            .server_uid(uid() ^ 1)
            .connect(&name),
        Err(ServiceError::NoSuchService { .. })
    ));
    // Ours, asked for explicitly.
    let n = name.clone();
    let t = thread::spawn(move || {
        ConnectOptions::new()
            .timeout(Duration::from_secs(10))
            .server_uid(uid())
            .connect(&n)
            .map(drop)
    });
    let _conn = service.accept().unwrap();
    t.join().unwrap().unwrap();
}

/// The uid the root-only tests run their other-user processes as.
const NOBODY: u32 = 65534;

/// Root only: a process of another user squats our service name (any user
/// can bind any abstract name): the client refuses it before reading a
/// byte from it.
#[test]
#[ignore = "needs root: as root, cargo test --release -- --ignored root_"]
fn root_a_squatter_of_another_uid_is_not_trusted() {
    common::require_root("running a process as another user");
    let _s = serial();
    let _w = Watchdog::new("squatter", Duration::from_secs(60));
    let name = unique("squat");
    let mut squatter = std::process::Command::new(std::env::current_exe().unwrap());
    std::os::unix::process::CommandExt::uid(&mut squatter, NOBODY);
    let mut squatter = squatter
        .args(common::CHILD_ENTRY)
        .env(common::ROLE, "squatter")
        .env("SVC_NAME", &name)
        .env("SVC_VICTIM_UID", uid().to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = common::StdoutLines::new(squatter.stdout.take().unwrap());
    let _squatter = common::guard(squatter);
    lines.wait_for("SQUATTING", Duration::from_secs(20));
    let e = remora::connect_service_timeout(&name, Duration::from_secs(5));
    assert!(
        matches!(e, Err(ServiceError::UntrustedServer { uid }) if uid == NOBODY),
        "{e:?}"
    );
    // The real server cannot have the name meanwhile.
    assert!(matches!(
        Service::bind(&name, &echo_config()),
        Err(ServiceError::NameInUse { .. })
    ));
}

/// Root only: a client of another user is refused by default, admitted by
/// `allow_uid`, and then served (the memfd is root's, mode 0600: the
/// descriptor it received is all it needs).
#[test]
#[ignore = "needs root: as root, cargo test --release -- --ignored root_"]
fn root_a_client_of_another_uid_is_refused_unless_allowed() {
    common::require_root("running a process as another user");
    let _s = serial();
    let _w = Watchdog::new("other uid client", Duration::from_secs(60));
    for allowed in [false, true] {
        let name = unique(&format!("other{allowed}"));
        let options = match allowed {
            true => ServiceOptions::new().allow_uid(NOBODY),
            false => ServiceOptions::new(),
        };
        let mut service = Service::bind_with(&name, &echo_config(), options).unwrap();
        let mut client = std::process::Command::new(std::env::current_exe().unwrap());
        std::os::unix::process::CommandExt::uid(&mut client, NOBODY);
        let mut client = client
            .args(common::CHILD_ENTRY)
            .env(common::ROLE, "foreign_client")
            .env("SVC_NAME", &name)
            .env("SVC_SERVER_UID", uid().to_string())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let lines = common::StdoutLines::new(client.stdout.take().unwrap());
        let client = common::guard(client);
        if allowed {
            let conn = service.accept_timeout(Duration::from_secs(20)).unwrap();
            assert_eq!(conn.peer_uid(), NOBODY);
            assert_eq!(serve_echo(conn), 5);
            lines.wait_for("SERVED", Duration::from_secs(20));
        } else {
            let _ = service.accept_timeout(Duration::from_millis(500));
            lines.wait_for("PERMISSION_DENIED", Duration::from_secs(20));
        }
        client.wait_success(Duration::from_secs(20));
    }
}

// ---------------------------------------------------------------------------
// Hostile clients: the server keeps serving a good one.
// ---------------------------------------------------------------------------

/// Reads the welcome on a raw client socket, keeping the descriptor.
fn raw_read_welcome(sock: &OwnedFd) -> Option<OwnedFd> {
    let mut buf = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 8];
    // SAFETY: all-zero msghdr is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: live buffers.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n <= 0 {
        return None;
    }
    // SAFETY: the kernel wrote well-formed headers.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() || (*c).cmsg_type != libc::SCM_RIGHTS {
            return None;
        }
        let fd = libc::CMSG_DATA(c).cast::<RawFd>().read_unaligned();
        Some(OwnedFd::from_raw_fd(fd))
    }
}

/// The client's `attached` message.
fn attached() -> [u8; 32] {
    let mut m = welcome(1, 0, 0);
    m[8..12].copy_from_slice(&3u32.to_le_bytes());
    m
}

#[test]
fn hostile_clients_do_not_stop_a_good_one() {
    let _s = serial();
    let _w = Watchdog::new("hostile clients", Duration::from_secs(120));
    let before = footprint();
    let name = unique("hostile-clients");
    let mut service = Service::bind_with(
        &name,
        &echo_config(),
        ServiceOptions::new()
            .max_clients(48)
            .handshake_timeout(Duration::from_millis(200)),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let server = {
        let (stop, served) = (stop.clone(), served.clone());
        thread::spawn(move || {
            let mut handlers = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match service.accept_timeout(Duration::from_millis(50)) {
                    Ok(conn) => {
                        let served = served.clone();
                        handlers.push(thread::spawn(move || {
                            served.fetch_add(serve_echo(conn), Ordering::Relaxed);
                        }));
                    }
                    Err(ServiceError::Timeout) => {}
                    Err(e) => panic!("accept: {e:?}"),
                }
            }
            for h in handlers {
                h.join().unwrap();
            }
            // Handshakes still pending (silent clients) time out.
            thread::sleep(Duration::from_millis(300));
            service.clients()
        })
    };
    let hostile = |f: fn(&str), name: &str| {
        let (stop, name) = (stop.clone(), name.to_owned());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                f(&name);
            }
        })
    };
    let hostiles = vec![
        // Garbage instead of `attached`.
        hostile(
            |name| {
                let s = raw_connect(name);
                drop(raw_read_welcome(&s));
                raw_send(&s, b"garbage garbage garbage garbage!", &[]);
                thread::sleep(Duration::from_millis(5));
            },
            &name,
        ),
        // Never reads, never answers: held past the handshake timeout.
        hostile(
            |name| {
                let socks: Vec<OwnedFd> = (0..8).map(|_| raw_connect(name)).collect();
                thread::sleep(Duration::from_millis(400));
                drop(socks);
            },
            &name,
        ),
        // A descriptor flood: `attached` with 200 descriptors, many times.
        hostile(
            |name| {
                let s = raw_connect(name);
                drop(raw_read_welcome(&s));
                let devnull = std::fs::File::open("/dev/null").unwrap();
                let fds = vec![devnull.as_raw_fd(); 200];
                for _ in 0..20 {
                    if raw_send(&s, &attached(), &fds) < 0 {
                        break;
                    }
                }
                thread::sleep(Duration::from_millis(5));
            },
            &name,
        ),
        // Says `attached` without claiming the segment.
        hostile(
            |name| {
                let s = raw_connect(name);
                let fd = raw_read_welcome(&s);
                raw_send(&s, &attached(), &[]);
                thread::sleep(Duration::from_millis(20));
                drop(fd);
            },
            &name,
        ),
        // Connects and closes at once.
        hostile(
            |name| {
                for _ in 0..10 {
                    drop(raw_connect(name));
                }
                thread::sleep(Duration::from_millis(2));
            },
            &name,
        ),
    ];
    let start = Instant::now();
    let mut rounds = 0;
    let mut times = Vec::new();
    // At least 3 s of hostility and at least 10 good connections, however
    // slow the machine (the watchdog bounds it).
    while start.elapsed() < Duration::from_secs(3) || rounds < 10 {
        let t = Instant::now();
        match good_client(&name, 10) {
            Ok(()) => rounds += 1,
            // The slots may all be held by silent clients for a moment.
            Err(ServiceError::ServerFull) => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("good client: {e:?}"),
        }
        times.push(t.elapsed());
    }
    stop.store(true, Ordering::Relaxed);
    for h in hostiles {
        h.join().unwrap();
    }
    let clients_left = server.join().unwrap();
    let (median, worst) = common::median_max(&times);
    eprintln!(
        "good client: {rounds} connections of 10 echoes in {:?} among hostile clients, median {median:?}, worst {worst:?}",
        start.elapsed()
    );
    assert_eq!(served.load(Ordering::Relaxed), rounds * 10);
    assert_eq!(clients_left, 0);
    assert_eq!(footprint(), before);
}

#[test]
fn no_leaks_after_many_connections() {
    let _s = serial();
    let _w = Watchdog::new("leaks", Duration::from_secs(120));
    let before = footprint();
    let name = unique("leaks");
    let mut service = Service::bind(&name, &echo_config()).unwrap();
    for i in 0..200 {
        let n = name.clone();
        let server_drops = i % 3 == 0;
        let client = thread::spawn(move || {
            if server_drops {
                remora::connect_service(&n).map(drop)
            } else {
                good_client(&n, 2)
            }
        });
        let conn = service.accept().unwrap();
        if server_drops {
            // The server never takes a channel.
            drop(conn);
        } else {
            serve_echo(conn);
        }
        client.join().unwrap().unwrap();
    }
    assert_eq!(service.clients(), 0);
    drop(service);
    assert_eq!(footprint(), before);
}

/// A listener that never accepts, its backlog full (what a squatter of
/// another user can do to our name: the client then never reaches its
/// `SO_PEERCRED` check): a connect without a timeout gives up with `Busy`
/// (before: it retried `EAGAIN` for ever).
#[test]
fn a_full_backlog_that_never_drains_is_busy() {
    let _s = serial();
    let _w = Watchdog::new("busy", Duration::from_secs(60));
    let name = unique("busy");
    let listener = raw_listener(&name);
    // SAFETY: plain syscall: backlog 0 admits one connection.
    cvt(unsafe { libc::listen(listener.as_raw_fd(), 0) });
    // Fill the backlog (one connection: a blocking connect beyond would
    // wait).
    let filler = raw_connect(&name);
    let start = Instant::now();
    let r = remora::connect_service(&name);
    let took = start.elapsed();
    assert!(matches!(r, Err(ServiceError::Busy)), "{r:?} after {took:?}");
    assert!(took >= Duration::from_secs(1), "gave up early: {took:?}");
    // With a timeout of its own, that timeout is the limit.
    let r = remora::connect_service_timeout(&name, Duration::from_millis(100));
    assert!(matches!(r, Err(ServiceError::Timeout)), "{r:?}");
    drop(filler);
}

/// `Duration::MAX` as a handshake timeout means none; it panicked the
/// accept loop at the first client (`Instant + Duration::MAX`).
#[test]
fn a_handshake_timeout_of_duration_max_means_none() {
    let _s = serial();
    let _w = Watchdog::new("handshake max", Duration::from_secs(60));
    let name = unique("hs-max");
    let mut service = Service::bind_with(
        &name,
        &echo_config(),
        ServiceOptions::new().handshake_timeout(Duration::MAX),
    )
    .unwrap();
    let n = name.clone();
    let client =
        thread::spawn(move || remora::connect_service_timeout(&n, Duration::from_secs(20)));
    let conn = service.accept_timeout(Duration::from_secs(20));
    assert!(conn.is_ok(), "{conn:?}");
    assert!(client.join().unwrap().is_ok());
}

/// `Duration::MAX` as any timeout means "wait for ever"; each panicked
/// (`Instant + Duration::MAX`).
#[test]
fn timeouts_of_duration_max_mean_no_deadline() {
    let _s = serial();
    let _w = Watchdog::new("timeouts max", Duration::from_secs(60));
    let name = unique("to-max");
    let mut service = Service::bind(&name, &echo_config()).unwrap();
    let n = name.clone();
    let client = thread::spawn(move || {
        let conn = ConnectOptions::new()
            .timeout(Duration::MAX)
            .connect(&n)
            .unwrap();
        let opened = conn.accept_channel_timeout(Duration::MAX).unwrap();
        let (_tx, mut rx) = opened.channel::<u64, u64>().unwrap();
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(20))
                .unwrap()
                .to_native(),
            7
        );
    });
    let conn = service.accept_timeout(Duration::MAX).unwrap();
    let (mut tx, _rx) = conn
        .open_channel_timeout::<u64, u64>(ChannelConfig::new("extra").capacity(4096), Duration::MAX)
        .unwrap();
    tx.send(&7).unwrap();
    client.join().unwrap();
}
