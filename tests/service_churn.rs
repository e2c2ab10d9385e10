//! Named services across processes: many clients connecting and
//! disconnecting at random while some are killed with SIGKILL (or abort
//! themselves), and the server killed under its clients.
//!
//! The default churn runs 6 s with 16 clients; the `#[ignore]`d
//! `long_churn_64_clients_60_s` is the 60 s, 64-client run:
//! `cargo test --release --test service_churn -- --ignored --nocapture long_`.
//! Every test has a watchdog, kills its children, and checks that nothing is
//! left behind (descriptors, memfd mappings, /dev/shm, the temp dir).

mod common;

use common::service::{footprint, serve_echo};

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::{Rng, StdoutLines, Watchdog};
use remora::{ChannelConfig, RecvError, Service, ServiceError, ServiceOptions, WaitStrategy};

static SERIAL: Mutex<()> = Mutex::new(());

/// One case at a time: the children compete for 2 cores as it is.
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn unique(label: &str) -> String {
    format!("t{}-{label}", std::process::id())
}

fn config() -> Vec<ChannelConfig> {
    vec![
        ChannelConfig::new("echo")
            .capacity(4096)
            .wait_strategy(WaitStrategy::Block),
    ]
}

fn self_command(role: &str, name: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(common::CHILD_ENTRY)
        .env(common::ROLE, role)
        .env("SVC_NAME", name)
        .stdin(Stdio::null());
    cmd
}

/// An accept loop on a thread: one handler thread per connection. Returns
/// (messages echoed, clients still holding a slot) once stopped and every
/// handler has seen its client go.
fn serve(mut service: Service, stop: Arc<AtomicBool>) -> thread::JoinHandle<(usize, usize)> {
    thread::spawn(move || {
        let messages = Arc::new(AtomicUsize::new(0));
        let mut handlers = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            match service.accept_timeout(Duration::from_millis(50)) {
                Ok(conn) => {
                    let messages = messages.clone();
                    handlers.push(thread::spawn(move || {
                        messages.fetch_add(serve_echo(conn), Ordering::Relaxed);
                    }));
                }
                Err(ServiceError::Timeout) => {}
                Err(e) => panic!("accept: {e:?}"),
            }
            handlers.retain(|h| !h.is_finished());
        }
        for h in handlers {
            h.join().unwrap();
        }
        // Handshakes of killed clients time out.
        thread::sleep(Duration::from_millis(600));
        (messages.load(Ordering::Relaxed), service.clients())
    })
}

/// Kills (if asked) and reaps a client, which must have died by SIGKILL
/// or SIGABRT (the clients abort themselves at random), never failed.
fn reap(mut child: Child, kill: bool) {
    use std::os::unix::process::ExitStatusExt;
    if kill {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    let expected = matches!(status.signal(), Some(libc::SIGKILL | libc::SIGABRT));
    assert!(expected, "a client failed: {status}");
}

fn churn(clients: usize, run: Duration) {
    let _s = serial();
    let _w = Watchdog::new("service churn", run + Duration::from_secs(120));
    let before = footprint();
    let name = unique(&format!("churn{clients}"));
    let service = Service::bind_with(
        &name,
        &config(),
        ServiceOptions::new()
            .max_clients(clients * 2)
            .handshake_timeout(Duration::from_millis(500)),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let server = serve(service, stop.clone());
    let mut rng = Rng::new(common::test_seed("service churn", 0x5eed_c4a2));
    let spawn = |seed: u64| {
        self_command("churn_client", &name)
            .env("SVC_SEED", seed.to_string())
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut children: Vec<Option<Child>> =
        (0..clients).map(|_| Some(spawn(rng.next_u64()))).collect();
    let start = Instant::now();
    let (mut kills, mut aborts) = (0, 0);
    while start.elapsed() < run {
        thread::sleep(Duration::from_millis(rng.below(40)));
        // Clients that ended on their own (abort) are replaced.
        for slot in children.iter_mut() {
            let ended = slot.as_mut().unwrap().try_wait().unwrap().is_some();
            if ended {
                reap(slot.take().unwrap(), false);
                aborts += 1;
                *slot = Some(spawn(rng.next_u64()));
            }
        }
        let victim = rng.below(clients as u64) as usize;
        reap(children[victim].take().unwrap(), true);
        kills += 1;
        children[victim] = Some(spawn(rng.next_u64()));
    }
    for child in children.into_iter().flatten() {
        reap(child, true);
    }
    stop.store(true, Ordering::Relaxed);
    let (messages, left) = server.join().unwrap();
    eprintln!(
        "service churn: {clients} clients, {run:?}: {kills} kills, {aborts} self-aborts, {messages} echoes"
    );
    assert!(messages > 0);
    assert_eq!(left, 0, "slots still held after every client died");
    assert_eq!(footprint(), before);
}

#[test]
fn churn_16_clients_with_kills() {
    churn(16, Duration::from_secs(6));
}

#[test]
#[ignore]
fn long_churn_64_clients_60_s() {
    churn(64, Duration::from_secs(60));
}

/// Connects, echoes a random number of checked messages, then leaves in a
/// random way: drops everything, aborts the process mid-stream, or keeps
/// the connection and opens another. Loops until killed.
fn churn_client_role(name: &str) {
    let seed: u64 = std::env::var("SVC_SEED").unwrap().parse().unwrap();
    let mut rng = Rng::new(seed);
    let mut kept = Vec::new();
    // The aborts below must not leave core files behind.
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `no_core` is a valid rlimit for the call.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) }, 0);
    loop {
        let conn = match remora::connect_service_timeout(name, Duration::from_secs(20)) {
            Ok(conn) => conn,
            Err(ServiceError::ServerFull) => {
                thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(e) => panic!("connect: {e}"),
        };
        let (mut tx, mut rx) = conn.raw_channel("echo").unwrap();
        for i in 0..1 + rng.below(100) {
            let mut msg = vec![0u8; 8 + rng.below(200) as usize];
            msg[..8].copy_from_slice(&(seed ^ i).to_le_bytes());
            rng.fill(&mut msg[8..]);
            tx.send(&msg).unwrap();
            let back = rx.recv_timeout(Duration::from_secs(20)).unwrap();
            assert_eq!(&*back, &msg[..], "an echo came back wrong");
            if rng.below(300) == 0 {
                std::process::abort();
            }
        }
        if rng.chance(20) && kept.len() < 2 {
            kept.push((conn, tx, rx));
        }
    }
}

#[test]
fn server_killed_every_client_sees_disconnected() {
    let _s = serial();
    let _w = Watchdog::new("server kill", Duration::from_secs(120));
    let before = footprint();
    let name = unique("serverkill");
    let mut server = self_command("echo_server", &name)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let server_lines = StdoutLines::new(server.stdout.take().unwrap());
    let server = common::guard(server);
    let server_pid = server.id();
    server_lines.wait_for("BOUND", Duration::from_secs(20));
    let clients: Vec<_> = ["recv", "try_recv", "recv_timeout", "send"]
        .iter()
        .cycle()
        .take(8)
        .map(|how| {
            let mut c = self_command("waiting_client", &name)
                .env("SVC_HOW", how)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let lines = StdoutLines::new(c.stdout.take().unwrap());
            (common::guard(c), lines)
        })
        .collect();
    for (_, lines) in &clients {
        lines.wait_for("CONNECTED", Duration::from_secs(20));
    }
    // Let them settle into their waits.
    thread::sleep(Duration::from_millis(100));
    let killed = Instant::now();
    server.kill();
    let mut seen = Vec::new();
    for (client, lines) in clients {
        lines.wait_for("DISCONNECTED", Duration::from_secs(10));
        seen.push(killed.elapsed());
        client.wait_success(Duration::from_secs(10));
    }
    let (median, max) = common::median_max(&seen);
    eprintln!("server kill -9: 8 clients saw Disconnected, median {median:?}, last {max:?}");
    // Nothing is left: the name is free at once, and the server left no
    // file anywhere.
    drop(Service::bind(&name, &config()).unwrap());
    assert!(common::fifo_dirs_of(server_pid).is_empty());
    let shm_of_server = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("remora-{server_pid}-"))
        })
        .count();
    assert_eq!(shm_of_server, 0);
    assert_eq!(footprint(), before);
}

fn echo_server_role(name: &str) {
    let stop = Arc::new(AtomicBool::new(false));
    let service = Service::bind(name, &config()).unwrap();
    println!("BOUND");
    std::io::stdout().flush().unwrap();
    serve(service, stop).join().unwrap();
}

/// Connects, echoes once, then waits in `SVC_HOW` until the server dies.
fn waiting_client_role(name: &str) {
    let conn = remora::connect_service_timeout(name, Duration::from_secs(20)).unwrap();
    let (mut tx, mut rx) = conn.raw_channel("echo").unwrap();
    tx.send(b"hello").unwrap();
    assert_eq!(&*rx.recv().unwrap(), b"hello");
    let how = std::env::var("SVC_HOW").unwrap();
    if how == "send" {
        // Fill the server's inbound ring without reading the echoes: the
        // server blocks sending, we block sending.
        while tx.try_send(&[1; 64]).is_ok() {}
    }
    println!("CONNECTED");
    std::io::stdout().flush().unwrap();
    let deadline = Duration::from_secs(30);
    match how.as_str() {
        "recv" => assert_eq!(rx.recv().unwrap_err(), RecvError::Disconnected),
        "recv_timeout" => assert_eq!(
            rx.recv_timeout(deadline).unwrap_err(),
            RecvError::Disconnected
        ),
        "try_recv" => {
            let start = Instant::now();
            loop {
                match rx.try_recv() {
                    Err(RecvError::Empty) => thread::sleep(Duration::from_micros(200)),
                    Err(RecvError::Disconnected) => break,
                    other => panic!("{:?}", other.map(|m| m.len())),
                }
                assert!(start.elapsed() < deadline);
            }
        }
        "send" => loop {
            match tx.send_timeout(&[1; 64], deadline) {
                Ok(()) => {}
                Err(remora::SendError::Disconnected) => break,
                Err(e) => panic!("{e:?}"),
            }
        },
        other => panic!("bad SVC_HOW {other}"),
    }
    println!("DISCONNECTED");
    std::io::stdout().flush().unwrap();
}

#[test]
fn child_entry() {
    let Some(role) = common::role() else { return };
    let _w = Watchdog::new("service child", Duration::from_secs(180));
    let name = std::env::var("SVC_NAME").unwrap();
    match role.as_str() {
        "churn_client" => churn_client_role(&name),
        "echo_server" => echo_server_role(&name),
        "waiting_client" => waiting_client_role(&name),
        other => panic!("unknown role {other}"),
    }
}
