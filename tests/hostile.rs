//! Hostile peers and faults (issue 5): on the shared-memory transport, and
//! the kill storm over FIFOs too (malformed FIFO frames are in `fifo.rs`).
//!
//! Every test here starts real child processes: this test binary re-executed
//! through `remora::Spawner`, playing the role named in `REMORA_TEST_ROLE`
//! (see `child_entry`). Each cross-process test runs under a [`Watchdog`],
//! kills its children if it fails ([`KillOnDrop`]), checks that nothing is
//! left in /dev/shm, /tmp or the fd table, and holds [`SERIAL`] so two heavy
//! tests never share the 2 cores.
//!
//! * `scribbler_lockstep_typed`, `scribbler_concurrent_raw`: a child maps its
//!   own segment and writes random bytes over one channel's ring indices,
//!   control words, frame headers and payloads while the parent sends and
//!   receives on that channel in every form. The parent must only ever get
//!   messages or errors (never a panic, crash or hang), poisoning must be
//!   sticky, and a second channel in the same segment plus a second child on
//!   its own segment must be unaffected. `scribbler_concurrent_typed_untrusted`
//!   does the same to typed ends in `ReceiveMode::Copy` with the child
//!   scribbling at any moment: every archive read is a private copy.
//! * `kill_storm`: a streaming child is `kill -9`ed at a random moment; every
//!   committed message arrives intact and in order, then `Disconnected`.
//! * `stopped_peer_times_out_then_resumes`: SIGSTOP / SIGCONT.
//! * `spawn_crash_cycles_leak_nothing`: 1,000 children that exit, abort,
//!   panic or are killed before connecting, after, or mid-stream.
//!
//! Randomised tests print their seed; `REMORA_TEST_SEED=<n>` replays one.
//! Figures (rounds survived, detection times) are printed: run with
//! `--nocapture` to see them.
//!
//! Longer variants are `#[ignore]`d; run them (one at a time) with:
//!
//! ```text
//! cargo test --release --test hostile -- --ignored --nocapture --test-threads=1 long_
//! ```
//!
//! The last three tests pin down bugs the others found (the poisoned sender
//! that reported `Disconnected`, and the `try_`/short-timeout forms that
//! never noticed a killed peer).

mod common;

use std::fs::OpenOptions;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::stream::{self, ArchivedMsg, Msg};
use common::{
    KillOnDrop, Rng, Watchdog, checksum, median_max, open_fd_count, remora_segments,
    remora_tmp_entries, role, test_seed,
};
use remora::{
    ChannelConfig, RawReceiver, RawSender, Receiver, RecvError, RingFault, SendError, Sender,
    Spawner, Transport,
};

/// Cross-process tests must not run side by side on a 2-core machine (and
/// the leftover checks assume no other test's segment exists meanwhile).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Seed handed to a child through the environment.
const SEED_ENV: &str = "REMORA_TEST_CHILD_SEED";

/// A spawner that re-executes this test binary in `role`, over shared
/// memory whatever `REMORA_TRANSPORT` says (these tests are about the rings).
///
/// `/proc/self/exe` rather than `current_exe()`: a long run must survive a
/// rebuild that replaces the binary on disk meanwhile.
fn spawner(role: &str) -> Spawner {
    spawner_over(role, Transport::Shm)
}

/// [`spawner`] over a chosen transport (the kill storm runs over both).
fn spawner_over(role: &str, transport: Transport) -> Spawner {
    let mut s = Spawner::new("/proc/self/exe");
    // The scribbling child maps its segment a second time by name: a named
    // segment, not the sealed default (which has no name).
    s.transport(transport)
        .sealed(false)
        .args(common::CHILD_ENTRY)
        .env(common::ROLE, role)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    s
}

impl Msg {
    /// Message `seq` with `len` random bytes and their checksum.
    fn random(seq: u64, len: usize, rng: &mut Rng) -> Msg {
        let mut data = vec![0; len];
        rng.fill(&mut data);
        let sum = checksum(seq, &data);
        Msg { seq, data, sum }
    }
}

/// Whether a received message is the one its sender wrote.
fn intact(m: &ArchivedMsg) -> bool {
    m.sum == checksum(m.seq.to_native(), &m.data)
}

/// Checks that message `m` is stream message `expected`, intact.
fn check_stream(m: &ArchivedMsg, expected: u64) {
    assert_eq!(m.seq, expected, "lost, duplicated or reordered message");
    let mut buf = Vec::new();
    let sum = stream::payload(expected, &mut buf);
    assert!(
        m.sum == sum && m.data.as_slice() == buf.as_slice(),
        "message {expected} corrupted"
    );
}

/// What must hold after a test: no fd, segment or /tmp entry left behind.
struct Leftovers {
    fds: usize,
    tmp: Vec<String>,
}

impl Leftovers {
    fn snapshot() -> Leftovers {
        Leftovers {
            fds: open_fd_count(),
            tmp: remora_tmp_entries(),
        }
    }

    fn check(&self) {
        // `<=`: the harness may have closed an fd meanwhile; a leak of one
        // per child would show as dozens more.
        let fds = open_fd_count();
        assert!(
            fds <= self.fds,
            "file descriptors leaked: {} before, {fds} after",
            self.fds
        );
        assert!(remora_segments().is_empty(), "segment left in /dev/shm");
        let new: Vec<_> = remora_tmp_entries()
            .into_iter()
            .filter(|e| !self.tmp.contains(e))
            .collect();
        assert!(new.is_empty(), "left in /tmp: {new:?}");
    }
}

// ---------------------------------------------------------------------------
// The scribbler: a child that writes random bytes over its own segment.
// ---------------------------------------------------------------------------

// Byte layout, from src/layout.rs and src/ring/mod.rs (pinned there by
// static assertions): the segment header, then one page-aligned ring block
// per channel direction, each a 640-byte RingControl followed by the data.
/// Offset of `SegmentHeader::channel_count`.
const CHANNEL_COUNT_AT: usize = 28;
/// Offset of the channel directory, and the size of one descriptor.
const DIRECTORY_AT: usize = 64;
const DESCRIPTOR_SIZE: usize = 128;
/// In a descriptor: `name_len`, then the two 24-byte ring descriptors
/// (`offset: u64`, `capacity: u64`, `fingerprint: u64`).
const NAME_LEN_AT: usize = 48;
const RINGS_AT: usize = 56;
const RING_DESCRIPTOR_SIZE: usize = 24;
/// In a RingControl: the two indices, each on its own 128-byte line.
const TAIL_AT: usize = 0;
const HEAD_AT: usize = 128;
/// The doorbells' `epoch`/`waiting` words and the two close flags.
const CONTROL_WORDS_AT: [usize; 6] = [256, 260, 384, 388, 512, 516];
const RING_CONTROL_SIZE: usize = 640;
/// Ring directions, as indexed in a channel descriptor.
const TO_CHILD: usize = 0;
const TO_PARENT: usize = 1;
/// Frame kinds "MSG1" and "PAD1".
const KIND_MSG: u32 = 0x3147_534d;
const KIND_PAD: u32 = 0x3144_4150;

fn frame_size(len: u64) -> u64 {
    16 + len.next_multiple_of(16)
}

/// The child's own read-write mapping of its segment, made before
/// `remora::connect()` unlinks the name (a mapping survives the unlink), and
/// where the scribbled channel's two ring blocks are in it.
///
/// All writes and reads go through atomics on raw pointers: the library's
/// ends in this same process use the memory too. (The library itself reads
/// frames with volatile copies, so in the concurrent test the child races
/// with itself exactly as two processes would; the child is the hostile
/// side, and what is tested is the parent.)
struct Scribbler {
    base: *mut u8,
    len: usize,
    /// `(offset of the RingControl, capacity)` of the parent-to-child and
    /// child-to-parent rings.
    rings: [(usize, usize); 2],
    rng: Rng,
    count: u64,
}

// SAFETY: the mapping is never unmapped (it lives until the process exits)
// and is only accessed through atomics, so any thread may own the scribbler.
unsafe impl Send for Scribbler {}

impl Scribbler {
    /// Maps the segment named by `REMORA_CHANNEL`. Call before `connect()`.
    fn attach(channel: &str, seed: u64) -> Scribbler {
        let (base, len) = common::map_own_segment();
        let mut s = Scribbler {
            base,
            len,
            rings: [(0, 0); 2],
            rng: Rng::new(seed),
            count: 0,
        };
        s.rings = s.find_rings(channel);
        s
    }

    fn u64_at(&self, off: usize) -> &AtomicU64 {
        assert!(off.is_multiple_of(8) && off + 8 <= self.len);
        // SAFETY: in bounds and 8-aligned (the mapping is page-aligned); the
        // mapping outlives `self`; all our accesses to it are atomic.
        unsafe { AtomicU64::from_ptr(self.base.add(off).cast()) }
    }

    fn u32_at(&self, off: usize) -> &AtomicU32 {
        assert!(off.is_multiple_of(4) && off + 4 <= self.len);
        // SAFETY: as in `u64_at`, 4-aligned.
        unsafe { AtomicU32::from_ptr(self.base.add(off).cast()) }
    }

    fn u8_at(&self, off: usize) -> &AtomicU8 {
        assert!(off < self.len);
        // SAFETY: as in `u64_at`.
        unsafe { AtomicU8::from_ptr(self.base.add(off)) }
    }

    /// Reads the channel directory (intact at this point) for `channel`.
    fn find_rings(&self, channel: &str) -> [(usize, usize); 2] {
        let count = self.u32_at(CHANNEL_COUNT_AT).load(Ordering::Relaxed) as usize;
        for i in 0..count {
            let desc = DIRECTORY_AT + i * DESCRIPTOR_SIZE;
            let name_len = self.u32_at(desc + NAME_LEN_AT).load(Ordering::Relaxed) as usize;
            let name: Vec<u8> = (0..name_len)
                .map(|j| self.u8_at(desc + j).load(Ordering::Relaxed))
                .collect();
            if name != channel.as_bytes() {
                continue;
            }
            return [0, 1].map(|dir| {
                let ring = desc + RINGS_AT + dir * RING_DESCRIPTOR_SIZE;
                let offset = self.u64_at(ring).load(Ordering::Relaxed) as usize;
                let cap = self.u64_at(ring + 8).load(Ordering::Relaxed) as usize;
                assert!(
                    offset.is_multiple_of(4096) && offset + RING_CONTROL_SIZE + cap <= self.len
                );
                (offset, cap)
            });
        }
        panic!("no channel {channel:?} in the segment");
    }

    /// Frames published but not yet consumed in ring `dir`, as
    /// `(position, payload length)`, found by walking the headers from head
    /// to tail as a consumer would (over fillers, and from a skip to the
    /// next lap's start). Bounded, and stops at anything implausible:
    /// earlier scribbles may have broken the chain.
    fn frames(&self, dir: usize) -> Vec<(u64, u64)> {
        let (ctrl, cap) = self.rings[dir];
        let cap = cap as u64;
        let data = ctrl + RING_CONTROL_SIZE;
        let head = self.u64_at(ctrl + HEAD_AT).load(Ordering::Relaxed);
        let tail = self.u64_at(ctrl + TAIL_AT).load(Ordering::Relaxed);
        let mut found = Vec::new();
        let mut pos = head;
        let stamp = |idx: usize| self.u64_at(data + idx + 8).load(Ordering::Relaxed);
        let mut steps = 0;
        while pos < tail && pos.is_multiple_of(16) && found.len() < 64 && steps < 4096 {
            steps += 1;
            let idx = (pos & (cap - 1)) as usize;
            if stamp(idx) != !pos {
                // A skip: the frames go on at the next lap's start.
                let lap = pos - idx as u64 + cap;
                if idx != 0 && lap < tail && stamp(0) == !lap {
                    pos = lap;
                    continue;
                }
                break;
            }
            let len = u64::from(self.u32_at(data + idx).load(Ordering::Relaxed));
            match self.u32_at(data + idx + 4).load(Ordering::Relaxed) {
                // A filler in front of a frame.
                KIND_PAD if frame_size(len) < cap - idx as u64 => pos += frame_size(len),
                KIND_MSG if frame_size(len) <= cap - idx as u64 => {
                    found.push((pos, len));
                    pos += frame_size(len);
                }
                _ => break,
            }
        }
        found
    }

    /// One random write into the channel's rings. Indices and control
    /// words of both rings matter to the parent (its producer reads the
    /// parent-to-child head); frames mostly in the child-to-parent ring,
    /// whose frames the parent reads.
    fn scribble(&mut self) {
        self.count += 1;
        let any = self.rng.below(2) as usize;
        let mostly_to_parent = if self.rng.chance(80) {
            TO_PARENT
        } else {
            TO_CHILD
        };
        match self.rng.below(100) {
            0..10 => self.scribble_index(any),
            10..15 => self.scribble_control_word(any),
            15..55 => self.scribble_header(mostly_to_parent),
            _ => self.scribble_payload(mostly_to_parent),
        }
    }

    /// Moves the head or the tail somewhere plausible or absurd.
    fn scribble_index(&mut self, dir: usize) {
        let (ctrl, cap) = self.rings[dir];
        let at = ctrl
            + if self.rng.chance(50) {
                TAIL_AT
            } else {
                HEAD_AT
            };
        let cur = self.u64_at(at).load(Ordering::Relaxed);
        let r = &mut self.rng;
        let value = match r.below(6) {
            0 => cur.wrapping_add(16 * (1 + r.below(8))), // ahead, aligned
            1 => cur.wrapping_sub(16 * (1 + r.below(8))), // backwards
            2 => cur.wrapping_add(1 + r.below(15)),       // off alignment
            3 => cur.wrapping_add(cap as u64 + 16 * (1 + r.below(4))), // overfull
            4 => r.next_u64(),
            _ => 0,
        };
        self.u64_at(at).store(value, Ordering::Relaxed);
    }

    /// Doorbell epochs, waiting flags, close flags.
    fn scribble_control_word(&mut self, dir: usize) {
        let at = self.rings[dir].0 + CONTROL_WORDS_AT[self.rng.below(6) as usize];
        let value = match self.rng.below(3) {
            0 => 0,
            1 => 1,
            _ => self.rng.next_u64() as u32,
        };
        self.u32_at(at).store(value, Ordering::Relaxed);
    }

    /// Rewrites a frame header: usually one the consumer has yet to read.
    fn scribble_header(&mut self, dir: usize) {
        let (ctrl, cap) = self.rings[dir];
        let frames = self.frames(dir);
        let pos = if !frames.is_empty() && self.rng.chance(70) {
            frames[self.rng.below(frames.len() as u64) as usize].0
        } else {
            16 * self.rng.below(cap as u64 / 16)
        };
        let idx = (pos & (cap as u64 - 1)) as usize;
        let to_end = (cap - idx) as u64;
        let r = &mut self.rng;
        let (len, kind) = match r.below(6) {
            0 => (r.below(64), KIND_MSG),                           // shorter
            1 => (to_end - 16, KIND_PAD),                           // a PAD to the end (refused)
            2 => (cap as u64 / 2 - 32 + 16 * r.below(3), KIND_MSG), // about the max
            3 => (r.next_u64() & 0xffff_ffff, KIND_MSG),            // anything
            4 => (r.below(cap as u64), r.next_u64() as u32),        // unknown kind
            _ => (r.below(cap as u64), KIND_PAD),                   // a PAD that misses the end
        };
        let data = ctrl + RING_CONTROL_SIZE;
        self.u32_at(data + idx).store(len as u32, Ordering::Relaxed);
        self.u32_at(data + idx + 4).store(kind, Ordering::Relaxed);
    }

    /// A few random bytes, usually inside a payload yet to be read: often
    /// in its last 24 bytes, where rkyv puts the root (`seq`, the data's
    /// relative pointer and length, `sum`).
    fn scribble_payload(&mut self, dir: usize) {
        let (ctrl, cap) = self.rings[dir];
        let frames = self.frames(dir);
        let pos = if frames.is_empty() || self.rng.chance(30) {
            self.rng.below(cap as u64)
        } else {
            let (pos, len) = frames[self.rng.below(frames.len() as u64) as usize];
            let from = if self.rng.chance(50) {
                len.saturating_sub(24) // the root
            } else {
                0
            };
            pos + 16 + from + self.rng.below((len - from).max(1))
        };
        let data = ctrl + RING_CONTROL_SIZE;
        for i in 0..1 + self.rng.below(8) {
            let idx = ((pos + i) & (cap as u64 - 1)) as usize;
            let byte = self.rng.next_u64() as u8;
            self.u8_at(data + idx).store(byte, Ordering::Relaxed);
        }
    }
}

/// The parent's calls come in three forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    Try,
    Timeout,
    Blocking,
}

/// The `_timeout` forms' timeout in the scribbler tests: short, so rounds
/// are quick.
const SHORT: Duration = Duration::from_millis(1);

/// What the parent's calls on a scribbled channel returned, and the poison
/// state of its two ends.
#[derive(Debug, Default)]
struct Tally {
    rounds: u64,
    children: u64,
    scribbles: u64,
    recv_intact: u64,
    /// Validated (or raw) messages whose checksum failed: payload bytes the
    /// peer rewrote in place. No transport can notice that; only an
    /// end-to-end checksum does. Counted, not an error.
    recv_rewritten: u64,
    recv_invalid: u64,
    recv_none: u64,
    recv_disconnected: u64,
    recv_corrupted: u64,
    sent: u64,
    send_none: u64,
    send_disconnected: u64,
    send_corrupted: u64,
    rx_poisonings: u64,
    tx_poisonings: u64,
    /// Rounds in which at least one of the parent's ends was still healthy.
    live_rounds: u64,
    /// How often each kind of `RingFault` poisoned an end.
    faults: std::collections::BTreeMap<String, u64>,
    /// The parent's two ends of the current child's scribbled channel.
    rx_fault: Option<RingFault>,
    tx_fault: Option<RingFault>,
}

impl Tally {
    /// A new child: fresh ends, no poison.
    fn poisoned(&mut self, fault: RingFault) {
        let kind = format!("{fault:?}");
        let kind = kind.split(' ').next().unwrap_or_default().to_owned();
        *self.faults.entry(kind).or_default() += 1;
    }

    fn new_child(&mut self) {
        self.children += 1;
        self.rx_fault = None;
        self.tx_fault = None;
    }

    /// Checks and counts one receive. `got` is `Ok(intact)`.
    fn recv(&mut self, form: Form, got: Result<bool, RecvError>) {
        if let Some(fault) = self.rx_fault {
            assert_eq!(
                got,
                Err(RecvError::Corrupted(fault)),
                "a poisoned receiver must keep reporting its fault ({form:?} form)"
            );
            self.recv_corrupted += 1;
            return;
        }
        match got {
            Ok(true) => self.recv_intact += 1,
            Ok(false) => self.recv_rewritten += 1,
            Err(RecvError::Invalid { .. }) => self.recv_invalid += 1,
            Err(RecvError::Empty) if form == Form::Try => self.recv_none += 1,
            Err(RecvError::Timeout) if form == Form::Timeout => self.recv_none += 1,
            // A scribbled close flag says "closed"; the stream may go on.
            Err(RecvError::Disconnected) => self.recv_disconnected += 1,
            Err(RecvError::Corrupted(fault)) => {
                self.rx_fault = Some(fault);
                self.rx_poisonings += 1;
                self.poisoned(fault);
                self.recv_corrupted += 1;
            }
            other => panic!("{form:?} receive returned {other:?}"),
        }
    }

    /// Checks and counts one send.
    fn send(&mut self, form: Form, got: Result<(), SendError>) {
        if let Some(fault) = self.tx_fault {
            assert_eq!(
                got,
                Err(SendError::Corrupted(fault)),
                "a poisoned sender must keep reporting its fault ({form:?} form)"
            );
            self.send_corrupted += 1;
            return;
        }
        match got {
            Ok(()) => self.sent += 1,
            Err(SendError::Full) if form == Form::Try => self.send_none += 1,
            Err(SendError::Timeout) if form == Form::Timeout => self.send_none += 1,
            Err(SendError::Disconnected) => self.send_disconnected += 1,
            Err(SendError::Corrupted(fault)) => {
                self.tx_fault = Some(fault);
                self.tx_poisonings += 1;
                self.poisoned(fault);
                self.send_corrupted += 1;
            }
            other => panic!("{form:?} send returned {other:?}"),
        }
    }

    fn report(&self, label: &str, neighbour_round_trips: u64) {
        eprintln!(
            "{label}: survived {} rounds ({} with a healthy end; {} scribbles; {} children); \
             received {} intact, {} rewritten in place, {} invalid, {} empty/timeout, \
             {} disconnected, {} corrupted; sent {}, {} full/timeout, {} disconnected, \
             {} corrupted; poisonings: {} receivers, {} senders; faults: {:?}; \
             neighbour child: {} intact round trips",
            self.rounds,
            self.live_rounds,
            self.scribbles,
            self.children,
            self.recv_intact,
            self.recv_rewritten,
            self.recv_invalid,
            self.recv_none,
            self.recv_disconnected,
            self.recv_corrupted,
            self.sent,
            self.send_none,
            self.send_disconnected,
            self.send_corrupted,
            self.rx_poisonings,
            self.tx_poisonings,
            self.faults,
            neighbour_round_trips,
        );
    }
}

/// The parent's ends of the scribbled channel: typed (validated in place)
/// or raw.
trait VictimEnds {
    fn recv(&mut self, form: Form) -> Result<bool, RecvError>;
    fn send(&mut self, form: Form, seq: u64, rng: &mut Rng) -> Result<(), SendError>;
}

impl VictimEnds for (Sender<Msg>, Receiver<Msg>) {
    fn recv(&mut self, form: Form) -> Result<bool, RecvError> {
        let rx = &mut self.1;
        let got = match form {
            Form::Try => rx.try_recv(),
            Form::Timeout => rx.recv_timeout(SHORT),
            Form::Blocking => rx.recv(),
        };
        // Reading the validated archive is sound only because the child is
        // quiescent while the parent reads (lockstep): validation in place
        // does not protect against a rewrite after the check.
        got.map(|m| intact(&m))
    }

    fn send(&mut self, form: Form, seq: u64, rng: &mut Rng) -> Result<(), SendError> {
        let msg = Msg::random(seq, rng.below(1200) as usize, rng);
        match form {
            Form::Try => self.0.try_send(&msg),
            Form::Timeout => self.0.send_timeout(&msg, SHORT),
            Form::Blocking => self.0.send(&msg),
        }
    }
}

/// Raw messages: `seq`, random bytes, then the checksum of those bytes.
fn raw_message(seq: u64, len: usize, rng: &mut Rng) -> Vec<u8> {
    let mut bytes = vec![0; 16 + len];
    bytes[..8].copy_from_slice(&seq.to_le_bytes());
    rng.fill(&mut bytes[8..8 + len]);
    let sum = checksum(seq, &bytes[8..8 + len]);
    bytes[8 + len..].copy_from_slice(&sum.to_le_bytes());
    bytes
}

fn raw_intact(bytes: &[u8]) -> bool {
    // Copy first: the peer may be rewriting these bytes right now; the
    // bounds cannot change, the contents can.
    let copy = bytes.to_vec();
    let Some(body) = copy.len().checked_sub(8).filter(|&n| n >= 8) else {
        return false;
    };
    let seq = u64::from_le_bytes(copy[..8].try_into().unwrap());
    let sum = u64::from_le_bytes(copy[body..].try_into().unwrap());
    checksum(seq, &copy[8..body]) == sum
}

impl VictimEnds for (RawSender, RawReceiver) {
    fn recv(&mut self, form: Form) -> Result<bool, RecvError> {
        let rx = &mut self.1;
        let got = match form {
            Form::Try => rx.try_recv(),
            Form::Timeout => rx.recv_timeout(SHORT),
            Form::Blocking => rx.recv(),
        };
        got.map(|m| raw_intact(&m))
    }

    fn send(&mut self, form: Form, seq: u64, rng: &mut Rng) -> Result<(), SendError> {
        let bytes = raw_message(seq, rng.below(1200) as usize, rng);
        match form {
            Form::Try => self.0.try_send(&bytes),
            Form::Timeout => self.0.send_timeout(&bytes, SHORT),
            Form::Blocking => self.0.send(&bytes),
        }
    }
}

/// Typed ends whose receiver copies each frame out before validating it
/// (`ReceiveMode::Copy`): reading the archive is sound even while the
/// child rewrites the frame.
struct UntrustedEnds(Sender<Msg>, Receiver<Msg>);

impl UntrustedEnds {
    fn take(child: &KillOnDrop) -> UntrustedEnds {
        let (tx, mut rx) = child.channel::<Msg, Msg>("victim").unwrap();
        rx.distrust_peer(); // the parent's default already
        UntrustedEnds(tx, rx)
    }
}

impl VictimEnds for UntrustedEnds {
    fn recv(&mut self, form: Form) -> Result<bool, RecvError> {
        let got = match form {
            Form::Try => self.1.try_recv(),
            Form::Timeout => self.1.recv_timeout(SHORT),
            Form::Blocking => self.1.recv(),
        };
        got.map(|m| intact(&m))
    }

    fn send(&mut self, form: Form, seq: u64, rng: &mut Rng) -> Result<(), SendError> {
        let msg = Msg::random(seq, rng.below(1200) as usize, rng);
        match form {
            Form::Try => self.0.try_send(&msg),
            Form::Timeout => self.0.send_timeout(&msg, SHORT),
            Form::Blocking => self.0.send(&msg),
        }
    }
}

/// The child's legitimate traffic on the victim channel while its own
/// thread scribbles over it (raw or typed ends).
trait ChildEnds: Send + 'static {
    /// Sends message `seq` if there is room; whether it went.
    fn try_send_random(&mut self, seq: u64, rng: &mut Rng) -> bool;
    /// Receives one message if any; whether one came.
    fn try_recv_any(&mut self) -> bool;
}

impl ChildEnds for (RawSender, RawReceiver) {
    fn try_send_random(&mut self, seq: u64, rng: &mut Rng) -> bool {
        let len = rng.below(1200) as usize;
        self.0.try_send(&raw_message(seq, len, rng)).is_ok()
    }

    fn try_recv_any(&mut self) -> bool {
        // Only the length is looked at: the scribbling thread may be
        // rewriting the bytes.
        self.1.try_recv().map(|m| m.len()).is_ok()
    }
}

impl ChildEnds for UntrustedEnds {
    fn try_send_random(&mut self, seq: u64, rng: &mut Rng) -> bool {
        let len = rng.below(1200) as usize;
        self.0.try_send(&Msg::random(seq, len, rng)).is_ok()
    }

    fn try_recv_any(&mut self) -> bool {
        // A private copy: reading it is sound whatever the scribbler does.
        self.1.try_recv().map(|m| intact(&m)).is_ok()
    }
}

/// Commands on the untouched "bystander" channel, which doubles as the
/// control channel of the scribbler tests.
const CMD_ROUND: u8 = 0;
/// Drop every end, then exit.
const CMD_QUIT: u8 = 1;
/// Exit at once, closing nothing (the parent must notice the death).
const CMD_EXIT: u8 = 2;

/// Sends command `cmd` for `round` on the bystander channel and returns the
/// child's reply: its scribble count so far. Every control message is
/// checked exactly: the bystander must be unaffected by the scribbling.
fn command(ctl: &mut (Sender<Msg>, Receiver<Msg>), round: u64, cmd: u8) -> u64 {
    let data = vec![cmd; 1 + round as usize % 200];
    let sum = checksum(round, &data);
    ctl.0
        .send_timeout(
            &Msg {
                seq: round,
                data,
                sum,
            },
            Duration::from_secs(10),
        )
        .expect("bystander channel send");
    let reply = ctl
        .1
        .recv_timeout(Duration::from_secs(10))
        .expect("bystander channel reply");
    assert_eq!(reply.seq, round, "bystander channel out of step");
    assert!(intact(&reply), "bystander channel message corrupted");
    u64::from_le_bytes(reply.data.as_slice().try_into().expect("scribble count"))
}

/// The child side of [`command`]: the next command, or `None` once the
/// parent is gone.
fn next_command(ctl: &mut (Sender<Msg>, Receiver<Msg>)) -> Option<(u64, u8)> {
    let m = ctl.1.recv().ok()?;
    assert!(intact(&m), "bystander channel message corrupted");
    Some((m.seq.to_native(), m.data[0]))
}

fn reply(ctl: &mut (Sender<Msg>, Receiver<Msg>), round: u64, scribbles: u64) {
    let data = scribbles.to_le_bytes().to_vec();
    let sum = checksum(round, &data);
    let _ = ctl.0.send(&Msg {
        seq: round,
        data,
        sum,
    });
}

/// Capacity of the scribbled channel: small, so frames wrap often and the
/// parent's sends fill it (a producer re-reads the head only then).
const VICTIM_CAPACITY: usize = 4096;
/// A child's life ends after this many rounds, or earlier once its channel
/// has been poisoned for a while: a fresh child then brings fresh faults.
const ROUNDS_PER_CHILD: u64 = 400;
/// ... this many rounds after both parent ends are poisoned,
const ROUNDS_AFTER_BOTH_POISONED: u64 = 20;
/// ... or this many after the first one is.
const ROUNDS_AFTER_FIRST_POISONED: u64 = 60;

fn spawn_scribbler(role: &str, seed: u64) -> KillOnDrop {
    KillOnDrop(
        spawner(role)
            .env(SEED_ENV, seed.to_string())
            .channel_with(ChannelConfig::new("victim").capacity(VICTIM_CAPACITY))
            .channel_with(ChannelConfig::new("bystander").capacity(1 << 16))
            .spawn()
            .expect("spawn scribbler"),
    )
}

/// One scribbler child's life, parent side: rounds of (command on the
/// bystander, then random calls on the victim), then an exit, clean or
/// abrupt, during which the blocking forms must end too.
fn scribbler_child<E: VictimEnds>(
    role: &str,
    take: impl FnOnce(&KillOnDrop) -> E,
    rounds: u64,
    rng: &mut Rng,
    tally: &mut Tally,
) {
    let mut child = spawn_scribbler(role, rng.next_u64());
    let mut victim = take(&child);
    let mut ctl = child.channel::<Msg, Msg>("bystander").unwrap();
    tally.new_child();
    let mut seq = 0;
    let (mut both_poisoned_for, mut one_poisoned_for) = (0, 0);
    let mut round = 0;
    while round < rounds
        && both_poisoned_for < ROUNDS_AFTER_BOTH_POISONED
        && one_poisoned_for < ROUNDS_AFTER_FIRST_POISONED
    {
        command(&mut ctl, round, CMD_ROUND);
        for _ in 0..4 {
            let form = if rng.chance(50) {
                Form::Try
            } else {
                Form::Timeout
            };
            if rng.chance(50) {
                tally.recv(form, victim.recv(form));
            } else {
                tally.send(form, victim.send(form, seq, rng));
                seq += 1;
            }
        }
        round += 1;
        tally.rounds += 1;
        match (tally.rx_fault.is_some(), tally.tx_fault.is_some()) {
            (true, true) => both_poisoned_for += 1,
            (false, false) => tally.live_rounds += 1,
            _ => {
                one_poisoned_for += 1;
                tally.live_rounds += 1;
            }
        }
    }
    let cmd = if rng.chance(50) { CMD_QUIT } else { CMD_EXIT };
    tally.scribbles += command(&mut ctl, round, cmd);
    // The child is exiting: the blocking forms may deliver what is left but
    // must then end, with Disconnected at the latest (the watchdog catches a
    // hang). Bounded: a 4 KiB ring holds at most 256 frames.
    let mut ended = false;
    for _ in 0..10_000 {
        let got = victim.recv(Form::Blocking);
        ended = matches!(got, Err(RecvError::Disconnected | RecvError::Corrupted(_)));
        tally.recv(Form::Blocking, got);
        if ended {
            break;
        }
    }
    assert!(
        ended,
        "blocking recv kept returning messages from a dead child"
    );
    for _ in 0..10_000 {
        let got = victim.send(Form::Blocking, seq, rng);
        seq += 1;
        ended = matches!(got, Err(SendError::Disconnected | SendError::Corrupted(_)));
        tally.send(Form::Blocking, got);
        if ended {
            break;
        }
    }
    assert!(ended, "blocking send kept succeeding towards a dead child");
    let status = child.wait().unwrap();
    assert!(status.success(), "scribbler child failed: {status}");
}

/// A second child, on its own segment, echoing a checked stream for as long
/// as a scribbler test runs: the scribbling must stay inside its segment.
struct Neighbour {
    child: KillOnDrop,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl Neighbour {
    fn start() -> Neighbour {
        let child = KillOnDrop(spawner("echo").channel("c").spawn().unwrap());
        let (mut tx, mut rx) = child.channel::<Msg, Msg>("c").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut rng = Rng::new(7);
            let mut seq = 0;
            while !stopping.load(Ordering::Relaxed) {
                let len = rng.below(2000) as usize;
                let msg = Msg::random(seq, len, &mut rng);
                let echoed = match tx.send(&msg) {
                    Ok(()) => rx
                        .recv()
                        .map(|back| back.seq == seq && intact(&back))
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match echoed {
                    Ok(true) => seq += 1,
                    Ok(false) => panic!("neighbour's echo corrupted"),
                    // The test failed elsewhere and killed our child.
                    Err(_) if stopping.load(Ordering::Relaxed) => break,
                    Err(e) => panic!("neighbour's channel failed: {e}"),
                }
                // Paced: the point is coexistence, not load.
                std::thread::sleep(Duration::from_micros(200));
            }
            seq
        });
        Neighbour {
            child,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the echo stream; returns the number of checked round trips.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().unwrap();
        let round_trips = thread.join().expect("neighbour stream failed");
        // The thread dropped the parent's ends: the echo child sees
        // Disconnected and exits.
        assert!(self.child.wait().unwrap().success());
        round_trips
    }
}

impl Drop for Neighbour {
    fn drop(&mut self) {
        // Unwinding from a failed test: the stream thread must end quietly
        // when the child (killed by its KillOnDrop, next) goes away.
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Lockstep: the child scribbles (and sends and receives legitimately) only
/// between the parent's bursts of calls, so the parent can read validated
/// archives in place soundly. Typed ends, validated in place.
fn scribbler_lockstep(total_rounds: u64, seed: u64, limit: Duration) {
    let _s = serial();
    let _w = Watchdog::new("scribbler (lockstep)", limit);
    let before = Leftovers::snapshot();
    let neighbour = Neighbour::start();
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    while tally.rounds < total_rounds {
        let rounds = ROUNDS_PER_CHILD.min(total_rounds - tally.rounds);
        scribbler_child(
            "scribble_lockstep",
            |c| {
                let (tx, mut rx) = c.channel::<Msg, Msg>("victim").unwrap();
                // SAFETY: lockstep: the child writes only while the parent
                // waits for its reply on the bystander channel, never while
                // the parent holds a message, so what the parent validated
                // in place stays as it was while it reads it.
                unsafe { rx.trust_peer() };
                (tx, rx)
            },
            rounds,
            &mut rng,
            &mut tally,
        );
    }
    tally.report("scribbler (lockstep, typed)", neighbour.finish());
    assert!(
        tally.rx_poisonings > 0,
        "the scribbler never poisoned a receiver"
    );
    before.check();
}

/// Concurrent: the child scribbles from its own thread at any moment while
/// the parent calls; raw ends, whose bounds cannot be changed under the
/// reader (only the bytes can).
fn scribbler_concurrent(total_rounds: u64, seed: u64, limit: Duration, untrusted: bool) {
    let _s = serial();
    let _w = Watchdog::new("scribbler (concurrent)", limit);
    let before = Leftovers::snapshot();
    let neighbour = Neighbour::start();
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    while tally.rounds < total_rounds {
        let rounds = ROUNDS_PER_CHILD.min(total_rounds - tally.rounds);
        if untrusted {
            scribbler_child(
                "scribble_concurrent_untrusted",
                UntrustedEnds::take,
                rounds,
                &mut rng,
                &mut tally,
            );
        } else {
            scribbler_child(
                "scribble_concurrent",
                |c| c.raw_channel("victim").unwrap(),
                rounds,
                &mut rng,
                &mut tally,
            );
        }
    }
    let label = if untrusted {
        "scribbler (concurrent, typed, untrusted mode)"
    } else {
        "scribbler (concurrent, raw)"
    };
    tally.report(label, neighbour.finish());
    assert!(
        tally.rx_poisonings > 0,
        "the scribbler never poisoned a receiver"
    );
    before.check();
}

#[test]
fn scribbler_lockstep_typed() {
    let seed = test_seed("scribbler_lockstep_typed", 0x5c41_e8d0);
    scribbler_lockstep(3_000, seed, Duration::from_secs(120));
}

#[test]
fn scribbler_concurrent_raw() {
    let seed = test_seed("scribbler_concurrent_raw", 0x6186_f470);
    scribbler_concurrent(3_000, seed, Duration::from_secs(120), false);
}

/// Typed ends in `ReceiveMode::Copy` on both sides, scribbled at any
/// moment: every archive the parent reads is a private copy, so it is
/// validated and read soundly even while the child rewrites the frame.
#[test]
fn scribbler_concurrent_typed_untrusted() {
    let seed = test_seed("scribbler_concurrent_typed_untrusted", 0x0cc9_6850);
    scribbler_concurrent(3_000, seed, Duration::from_secs(120), true);
}

#[test]
#[ignore = "long: 200,000 rounds"]
fn long_scribbler_lockstep_typed() {
    let seed = test_seed("long_scribbler_lockstep_typed", 0x722b_9d30);
    scribbler_lockstep(200_000, seed, Duration::from_secs(3600));
}

#[test]
#[ignore = "long: 200,000 rounds"]
fn long_scribbler_concurrent_raw() {
    let seed = test_seed("long_scribbler_concurrent_raw", 0x944a_2920);
    scribbler_concurrent(200_000, seed, Duration::from_secs(3600), false);
}

/// Child side of both scribbler tests.
fn scribbler_child_main(mode: ScribbleMode) {
    let seed: u64 = std::env::var(SEED_ENV).unwrap().parse().unwrap();
    let mut scribbler = Scribbler::attach("victim", seed);
    let conn = remora::connect().unwrap();
    let mut ctl = conn.channel::<Msg, Msg>("bystander").unwrap();
    let mut rng = Rng::new(seed ^ 0xdead_beef);
    if mode == ScribbleMode::ConcurrentRaw {
        let victim = conn.raw_channel("victim").unwrap();
        scribble_concurrently(scribbler, victim, &mut ctl, &mut rng);
    } else if mode == ScribbleMode::ConcurrentUntrusted {
        let (tx, mut rx) = conn.channel::<Msg, Msg>("victim").unwrap();
        rx.distrust_peer(); // a child trusts its parent by default
        scribble_concurrently(scribbler, UntrustedEnds(tx, rx), &mut ctl, &mut rng);
    } else {
        let mut victim = conn.channel::<Msg, Msg>("victim").unwrap();
        let mut seq = 0;
        while let Some((round, cmd)) = next_command(&mut ctl) {
            if cmd == CMD_ROUND {
                // A legitimate peer's traffic, so there are frames to spoil;
                // every error is ignored (our own ends get poisoned too).
                for _ in 0..rng.below(4) {
                    let len = rng.below(1200) as usize;
                    let _ = victim.0.try_send(&Msg::random(seq, len, &mut rng));
                    seq += 1;
                }
                for _ in 0..rng.below(4) {
                    if let Ok(m) = victim.1.try_recv() {
                        let _ = intact(&m);
                    }
                }
                if rng.chance(50) {
                    scribbler.scribble();
                }
            }
            reply(&mut ctl, round, scribbler.count);
            match cmd {
                CMD_QUIT => return,
                CMD_EXIT => std::process::exit(0),
                _ => {}
            }
        }
    }
}

/// Which scribbler child to play.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ScribbleMode {
    Lockstep,
    ConcurrentRaw,
    ConcurrentUntrusted,
}

/// The concurrent child: a scribbling thread and a thread of legitimate
/// sends and receives on the victim channel, running until told to stop;
/// the main thread serves the bystander channel.
fn scribble_concurrently(
    mut scribbler: Scribbler,
    mut victim: impl ChildEnds,
    ctl: &mut (Sender<Msg>, Receiver<Msg>),
    rng: &mut Rng,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let running = |stop: &AtomicBool| !stop.load(Ordering::Relaxed);
    let pause = |max_us: u64, rng: &mut Rng| {
        std::thread::sleep(Duration::from_micros(rng.below(max_us)));
    };
    // Scribble only once the parent has taken its ends (it sends its first
    // command after that): an earlier scribble makes that take fail --
    // correctly, with ChannelError::Corrupted -- before the test begins.
    match next_command(ctl) {
        Some((round, CMD_ROUND)) => reply(ctl, round, 0),
        _ => return,
    }
    let (stop1, stop2) = (stop.clone(), stop.clone());
    let mut rng1 = Rng::new(rng.next_u64());
    let scribbling = std::thread::spawn(move || {
        while running(&stop1) {
            scribbler.scribble();
            pause(1000, &mut rng1);
        }
        scribbler.count
    });
    let mut rng2 = Rng::new(rng.next_u64());
    let traffic = std::thread::spawn(move || {
        let mut seq = 0;
        while running(&stop2) {
            if victim.try_send_random(seq, &mut rng2) {
                seq += 1;
            }
            if !victim.try_recv_any() {
                pause(200, &mut rng2);
            }
        }
        victim
    });
    let (round, cmd) = loop {
        match next_command(ctl) {
            Some((round, CMD_ROUND)) => reply(ctl, round, 0),
            Some(quit) => break quit,
            None => return, // the parent is gone
        }
    };
    stop.store(true, Ordering::Relaxed);
    let count = scribbling.join().unwrap();
    // Keep the victim's ends: an abrupt exit must not close them.
    let ends = traffic.join().unwrap();
    reply(ctl, round, count);
    if cmd == CMD_EXIT {
        std::process::exit(0);
    }
    drop(ends);
}

// ---------------------------------------------------------------------------
// Kill storms: kill -9 a streaming child at a random moment.
// ---------------------------------------------------------------------------

/// Receives stream messages on a thread until an error; reports how many
/// arrived (all checked: contiguous from 0, intact), the error, and when.
fn stream_reader(
    mut rx: Receiver<Msg>,
) -> (mpsc::Receiver<(u64, RecvError, Instant)>, JoinHandle<()>) {
    let (done_tx, done_rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let mut next = 0;
        let end = loop {
            match rx.recv() {
                Ok(m) => check_stream(&m, next),
                Err(e) => break e,
            }
            next += 1;
        };
        done_tx.send((next, end, Instant::now())).unwrap();
    });
    (done_rx, thread)
}

/// Waits for [`stream_reader`]'s report, re-raising its panic if it failed.
fn reader_report(
    done: &mpsc::Receiver<(u64, RecvError, Instant)>,
    thread: JoinHandle<()>,
    limit: Duration,
) -> (u64, RecvError, Instant) {
    match done.recv_timeout(limit) {
        Ok(report) => {
            thread.join().unwrap();
            report
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(thread.join().unwrap_err())
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("receiver still blocked after {limit:?}"),
    }
}

fn kill_storm(runs: usize, seed: u64, limit: Duration, transport: Transport) {
    let _s = serial();
    let _w = Watchdog::new("kill storm", limit);
    let before = Leftovers::snapshot();
    let mut rng = Rng::new(seed);
    let mut detection = Vec::new();
    let mut received = Vec::new();
    for run in 0..runs {
        // Up to 150 ms: some kills land before the child even connects.
        let delay = Duration::from_micros(rng.below(150_000));
        let mut child = KillOnDrop(
            spawner_over("stream", transport)
                .channel_with(ChannelConfig::new("c").capacity(1 << 16))
                .spawn()
                .unwrap(),
        );
        let (_tx, rx) = child.channel::<Msg, Msg>("c").unwrap();
        let (done, reader) = stream_reader(rx);
        std::thread::sleep(delay);
        let killed = Instant::now();
        child.kill().unwrap();
        let (count, end, ended) = reader_report(&done, reader, Duration::from_secs(10));
        assert_eq!(
            end,
            RecvError::Disconnected,
            "run {run}: the stream must end with Disconnected after {count} messages"
        );
        let took = ended.saturating_duration_since(killed);
        assert!(
            took < Duration::from_secs(2),
            "run {run}: Disconnected {took:?} after the kill"
        );
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "run {run}: {status}");
        detection.push(took);
        received.push(count);
    }
    let (median, max) = median_max(&detection);
    received.sort();
    eprintln!(
        "kill storm over {transport}: {runs} runs; kill -9 to Disconnected: median {median:?}, max {max:?}; \
         messages received intact before it: min {}, median {}, max {}",
        received[0],
        received[runs / 2],
        received[runs - 1]
    );
    before.check();
}

#[test]
fn kill_storm_20_runs() {
    let seed = test_seed("kill_storm_20_runs", 0x8020_b6e0);
    kill_storm(20, seed, Duration::from_secs(120), Transport::Shm);
}

#[test]
fn kill_storm_20_runs_over_fifos() {
    let seed = test_seed("kill_storm_20_runs_over_fifos", 0x1004_b6e1);
    kill_storm(20, seed, Duration::from_secs(120), Transport::Fifo);
}

#[test]
#[ignore = "long: 500 runs"]
fn long_kill_storm_500_runs() {
    let seed = test_seed("long_kill_storm_500_runs", 0x255a_7a40);
    kill_storm(500, seed, Duration::from_secs(1800), Transport::Shm);
}

// ---------------------------------------------------------------------------
// A stopped peer.
// ---------------------------------------------------------------------------

/// Messages the child streams in `stopped_peer_times_out_then_resumes`.
const STOPPED_CHILD_SENDS: u64 = 20_000;
/// Messages the parent sends in total in that test.
const STOPPED_PARENT_SENDS: u64 = 5_000;
/// The child's final report: `seq` is this, `sum` the number of parent
/// messages it received intact and in order.
const SUMMARY: u64 = u64::MAX;

#[test]
fn stopped_peer_times_out_then_resumes() {
    let _s = serial();
    let _w = Watchdog::new("stopped peer", Duration::from_secs(120));
    let before = Leftovers::snapshot();
    let mut child = KillOnDrop(
        spawner("stop_stream")
            .channel_with(ChannelConfig::new("c").capacity(1 << 14))
            .spawn()
            .unwrap(),
    );
    let pid = child.id();
    let (mut tx, mut rx) = child.channel::<Msg, Msg>("c").unwrap();
    let long = Duration::from_secs(10);
    let mut next = 0;
    let recv_checked = |rx: &mut Receiver<Msg>, next: &mut u64| {
        let m = rx.recv_timeout(long).expect("stream");
        check_stream(&m, *next);
        *next += 1;
    };
    while next < 500 {
        recv_checked(&mut rx, &mut next);
    }

    common::signal(pid, libc::SIGSTOP);
    common::wait_until_stopped(pid, Duration::from_secs(5));
    // What the child committed before it stopped is all there.
    loop {
        match rx.try_recv() {
            Ok(m) => check_stream(&m, next),
            Err(RecvError::Empty) => break,
            Err(e) => panic!("draining a stopped peer: {e:?}"),
        }
        next += 1;
    }
    let start = Instant::now();
    let got = rx.recv_timeout(Duration::from_millis(100)).map(|m| m.seq);
    let recv_waited = start.elapsed();
    assert_eq!(got, Err(RecvError::Timeout), "a stopped peer is not gone");
    assert!(
        (Duration::from_millis(100)..Duration::from_secs(2)).contains(&recv_waited),
        "recv_timeout(100 ms) returned after {recv_waited:?}"
    );
    // Fill the ring the stopped child no longer drains, then time out.
    let mut sent = 0;
    let mut buf = Vec::new();
    let mut message = |seq: u64| {
        let sum = stream::payload(seq, &mut buf);
        Msg {
            seq,
            data: buf.clone(),
            sum,
        }
    };
    while tx.try_send(&message(sent)).is_ok() {
        sent += 1;
    }
    let start = Instant::now();
    let got = tx.send_timeout(&message(sent), Duration::from_millis(100));
    let send_waited = start.elapsed();
    assert_eq!(got, Err(SendError::Timeout));
    assert!(
        (Duration::from_millis(100)..Duration::from_secs(2)).contains(&send_waited),
        "send_timeout(100 ms) returned after {send_waited:?}"
    );
    eprintln!(
        "stopped peer: recv_timeout(100 ms) -> Timeout after {recv_waited:?}; \
         send_timeout(100 ms) on a full ring ({sent} messages) -> Timeout after {send_waited:?}"
    );

    common::signal(pid, libc::SIGCONT);
    // Both streams resume where they stopped: nothing lost either way.
    while sent < STOPPED_PARENT_SENDS {
        tx.send(&message(sent)).expect("send after SIGCONT");
        sent += 1;
    }
    drop(tx);
    while next < STOPPED_CHILD_SENDS {
        recv_checked(&mut rx, &mut next);
    }
    let summary = rx.recv_timeout(long).expect("child's summary");
    assert_eq!(summary.seq, SUMMARY);
    assert_eq!(
        summary.sum, STOPPED_PARENT_SENDS,
        "the child did not receive every message"
    );
    drop(summary);
    assert_eq!(rx.recv().map(|m| m.seq), Err(RecvError::Disconnected));
    assert!(child.wait().unwrap().success());
    drop((rx, child));
    before.check();
}

// ---------------------------------------------------------------------------
// Resource hygiene with crashing children.
// ---------------------------------------------------------------------------

/// How a child in `spawn_crash_cycles_leak_nothing` ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    ExitBeforeConnect,
    AbortBeforeConnect,
    PanicBeforeConnect,
    AbortAfterConnect,
    PanicAfterConnect,
    KilledAfterConnect,
    ExitMidStream,
    AbortMidStream,
    PanicMidStream,
    KilledMidStream,
    CleanEcho,
}

const FATES: [Fate; 11] = [
    Fate::ExitBeforeConnect,
    Fate::AbortBeforeConnect,
    Fate::PanicBeforeConnect,
    Fate::AbortAfterConnect,
    Fate::PanicAfterConnect,
    Fate::KilledAfterConnect,
    Fate::ExitMidStream,
    Fate::AbortMidStream,
    Fate::PanicMidStream,
    Fate::KilledMidStream,
    Fate::CleanEcho,
];

const FATE_ENV: &str = "REMORA_TEST_FATE";
/// Messages a mid-stream child commits before it dies.
const MID_STREAM: u64 = 20;

impl Fate {
    fn from_env() -> Fate {
        let name = std::env::var(FATE_ENV).unwrap();
        *FATES.iter().find(|f| format!("{f:?}") == name).unwrap()
    }

    /// Whether the child has committed exactly [`MID_STREAM`] messages
    /// when it dies on its own.
    fn mid_stream(self) -> bool {
        matches!(
            self,
            Fate::ExitMidStream | Fate::AbortMidStream | Fate::PanicMidStream
        )
    }

    /// Checks the exit status: the library must not steal or change it.
    fn check_status(self, status: std::process::ExitStatus) {
        let ok = match self {
            Fate::ExitBeforeConnect | Fate::ExitMidStream | Fate::CleanEcho => status.success(),
            Fate::AbortBeforeConnect | Fate::AbortAfterConnect | Fate::AbortMidStream => {
                status.signal() == Some(libc::SIGABRT)
            }
            // A panicking test makes the harness exit with 101.
            Fate::PanicBeforeConnect | Fate::PanicAfterConnect | Fate::PanicMidStream => {
                status.code() == Some(101)
            }
            Fate::KilledAfterConnect | Fate::KilledMidStream => {
                status.signal() == Some(libc::SIGKILL)
            }
        };
        assert!(ok, "{self:?}: unexpected exit status {status}");
    }

    /// Child side.
    fn play(self) {
        let die = |how: Fate| match how {
            Fate::ExitBeforeConnect | Fate::ExitMidStream => std::process::exit(0),
            Fate::AbortBeforeConnect | Fate::AbortAfterConnect | Fate::AbortMidStream => {
                // No core file: core_pattern may be "core" (a file in the
                // current directory, i.e. the crate).
                let none = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                // SAFETY: `none` is a valid rlimit; lowering a limit is allowed.
                unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) };
                std::process::abort()
            }
            _ => panic!("dying as planned: {how:?}"),
        };
        if matches!(
            self,
            Fate::ExitBeforeConnect | Fate::AbortBeforeConnect | Fate::PanicBeforeConnect
        ) {
            die(self);
        }
        let conn = remora::connect().unwrap();
        let (mut tx, mut rx) = conn.channel::<Msg, Msg>("c").unwrap();
        match self {
            Fate::AbortAfterConnect | Fate::PanicAfterConnect => die(self),
            // Blocks until the parent kills us.
            Fate::KilledAfterConnect => drop(rx.recv().map(|m| m.seq)),
            Fate::CleanEcho => {
                while let Ok(m) = rx.recv() {
                    let echo = Msg {
                        seq: m.seq.to_native(),
                        data: m.data.to_vec(),
                        sum: m.sum.to_native(),
                    };
                    drop(m);
                    tx.send(&echo).unwrap();
                }
            }
            _ => {
                let mut buf = Vec::new();
                let mut seq = 0;
                // Mid-stream: MID_STREAM messages then death, or a stream
                // until the parent kills us.
                while self == Fate::KilledMidStream || seq < MID_STREAM {
                    let sum = stream::payload(seq, &mut buf);
                    let m = Msg {
                        seq,
                        data: buf,
                        sum,
                    };
                    tx.send(&m).unwrap();
                    buf = m.data;
                    seq += 1;
                }
                die(self);
            }
        }
    }
}

fn spawn_crash_cycles(cycles: usize, seed: u64, limit: Duration) {
    let _s = serial();
    let _w = Watchdog::new("spawn/crash cycles", limit);
    let before = Leftovers::snapshot();
    let mut rng = Rng::new(seed);
    let mut counts = [0usize; FATES.len()];
    let start = Instant::now();
    for cycle in 0..cycles {
        let which = rng.below(FATES.len() as u64) as usize;
        let fate = FATES[which];
        counts[which] += 1;
        let mut child = KillOnDrop(
            spawner("fate")
                .env(FATE_ENV, format!("{fate:?}"))
                // The planned panics would be noise, and slow: with
                // RUST_BACKTRACE=1 each symbolises a backtrace (~100 ms).
                .stderr(Stdio::null())
                .env("RUST_BACKTRACE", "0")
                .channel_with(ChannelConfig::new("c").capacity(1 << 14))
                .spawn()
                .unwrap(),
        );
        let (mut tx, mut rx) = child.channel::<Msg, Msg>("c").unwrap();
        let mut next = 0;
        match fate {
            Fate::KilledAfterConnect => {
                while !child.is_attached() {
                    std::thread::sleep(Duration::from_micros(200));
                }
                child.kill().unwrap();
            }
            Fate::KilledMidStream => {
                while next < MID_STREAM {
                    check_stream(&rx.recv().unwrap(), next);
                    next += 1;
                }
                child.kill().unwrap();
            }
            Fate::CleanEcho => {
                let mut rng = Rng::new(cycle as u64);
                tx.send(&Msg::random(1, 100, &mut rng)).unwrap();
                let back = rx.recv().unwrap();
                assert!(back.seq == 1 && intact(&back));
            }
            _ => {}
        }
        drop(tx); // an echo child sees Disconnected and exits
        fate.check_status(child.wait().unwrap());
        // Whatever the child committed before it died is still delivered,
        // in order, then Disconnected. A crashed child sets no close flag:
        // try_recv notices the death by polling its pidfd (rate-limited to
        // once per 10 ms), so it may say Empty a few times first.
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            match rx.try_recv() {
                Ok(m) => check_stream(&m, next),
                Err(RecvError::Disconnected) => break,
                Err(RecvError::Empty) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                Err(e) => panic!("{fate:?}: {e:?} from a dead child's channel"),
            }
            next += 1;
        }
        if fate.mid_stream() {
            assert_eq!(next, MID_STREAM, "{fate:?}: committed messages lost");
        }
    }
    eprintln!(
        "spawn/crash cycles: {cycles} in {:?}; fates: {}",
        start.elapsed(),
        FATES
            .iter()
            .zip(counts)
            .map(|(f, n)| format!("{f:?} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    before.check();
}

#[test]
fn spawn_crash_cycles_leak_nothing() {
    let seed = test_seed("spawn_crash_cycles_leak_nothing", 0xccf2_cce0);
    spawn_crash_cycles(1000, seed, Duration::from_secs(300));
}

#[test]
#[ignore = "long: 20,000 cycles"]
fn long_spawn_crash_cycles_leak_nothing() {
    let seed = test_seed("long_spawn_crash_cycles_leak_nothing", 0xfdeea4a0);
    spawn_crash_cycles(20_000, seed, Duration::from_secs(3600));
}

// ---------------------------------------------------------------------------
// Regressions: bugs these tests found (fixed in b86f866).
// ---------------------------------------------------------------------------

/// Fills the parent-to-child ring of a 4 KiB channel, then poisons the
/// parent's sender by publishing an impossible head (past the tail).
#[test]
fn poisoned_sender_stays_poisoned_after_the_receiver_closes() {
    let _s = serial();
    let parent = remora::Segment::create(&[ChannelConfig::new("c").capacity(4096)]).unwrap();
    let child = remora::Segment::open(parent.name()).unwrap();
    let (mut tx, _rx) = parent.raw_channel("c").unwrap();
    let (_ctx, crx) = child.raw_channel("c").unwrap();
    while tx.try_send(&[0; 100]).is_ok() {}
    // The parent-to-child ring is the first ring block (layout.rs); its
    // head is 128 bytes in. Writing it through the file is the "peer".
    let head_at = 8192 + HEAD_AT as u64;
    let tail = 4096 - 4096 % frame_size(100); // what 100-byte frames filled
    let file = OpenOptions::new()
        .write(true)
        .open(format!("/dev/shm{}", parent.name()))
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, &(tail + 16).to_le_bytes(), head_at).unwrap();
    let fault = match tx.try_send(&[0; 100]) {
        Err(SendError::Corrupted(fault)) => fault,
        other => panic!("expected the impossible head to poison the sender: {other:?}"),
    };
    drop(crx); // the peer's receiver closes
    assert_eq!(
        tx.try_send(&[0; 100]),
        Err(SendError::Corrupted(fault)),
        "SendError::Corrupted promises every later call returns it too"
    );
}

/// An idle child on a 4 KiB channel. A fresh child per form: each form
/// must notice the death itself, not find a flag another form latched.
fn idle_child() -> KillOnDrop {
    KillOnDrop(
        spawner("idle")
            .channel_with(ChannelConfig::new("c").capacity(4096))
            .spawn()
            .unwrap(),
    )
}

/// Waits until the child attached, then kills and reaps it.
fn kill_and_reap(child: &mut KillOnDrop) {
    while !child.is_attached() {
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Kills an idle child, reaps it, then polls: `try_recv`, and on a fresh
/// child short `recv_timeout`s, must each report `Disconnected` within 1 s.
/// (`liveness.rs` also kills the peer while each form is waiting.)
#[test]
fn polling_receiver_sees_a_killed_peer() {
    let _s = serial();
    let _w = Watchdog::new("polling receiver", Duration::from_secs(60));
    let poll = |form: &str, op: &mut dyn FnMut(&mut RawReceiver) -> Result<(), RecvError>| {
        let mut child = idle_child();
        let (_tx, mut rx) = child.raw_channel("c").unwrap();
        kill_and_reap(&mut child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(1) {
            match op(&mut rx) {
                Err(RecvError::Disconnected) => return,
                Err(RecvError::Empty | RecvError::Timeout) => {}
                other => panic!("{form}: {other:?}"),
            }
        }
        panic!("1 s after kill -9, {form} never saw Disconnected");
    };
    poll("try_recv", &mut |rx| rx.try_recv().map(drop));
    poll("recv_timeout(10 ms)", &mut |rx| {
        rx.recv_timeout(Duration::from_millis(10)).map(drop)
    });
}

/// Kills an idle child whose ring the parent filled, reaps it, then polls:
/// `try_send`, and on a fresh child short `send_timeout`s, must each report
/// `Disconnected` within 1 s.
#[test]
fn polling_sender_sees_a_killed_peer() {
    let _s = serial();
    let _w = Watchdog::new("polling sender", Duration::from_secs(60));
    let poll = |form: &str, op: &mut dyn FnMut(&mut RawSender) -> Result<(), SendError>| {
        let mut child = idle_child();
        let (mut tx, _rx) = child.raw_channel("c").unwrap();
        while tx.try_send(&[0; 100]).is_ok() {}
        kill_and_reap(&mut child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(1) {
            match op(&mut tx) {
                Err(SendError::Disconnected) => return,
                Err(SendError::Full | SendError::Timeout) => {}
                other => panic!("{form}: {other:?}"),
            }
        }
        panic!("1 s after kill -9, {form} never saw Disconnected");
    };
    poll("try_send", &mut |tx| tx.try_send(&[0; 100]));
    poll("send_timeout(10 ms)", &mut |tx| {
        tx.send_timeout(&[0; 100], Duration::from_millis(10))
    });
}

// ---------------------------------------------------------------------------
// The children.
// ---------------------------------------------------------------------------

/// Entry point of the re-executed children; does nothing in a normal run.
#[test]
fn child_entry() {
    let Some(role) = role() else { return };
    let _w = Watchdog::new("hostile child", Duration::from_secs(600));
    match role.as_str() {
        "scribble_lockstep" => return scribbler_child_main(ScribbleMode::Lockstep),
        "scribble_concurrent" => return scribbler_child_main(ScribbleMode::ConcurrentRaw),
        "scribble_concurrent_untrusted" => {
            return scribbler_child_main(ScribbleMode::ConcurrentUntrusted);
        }
        "fate" => return Fate::from_env().play(),
        _ => {}
    }
    let conn = remora::connect().unwrap();
    match role.as_str() {
        "echo" => {
            let (mut tx, mut rx) = conn.channel::<Msg, Msg>("c").unwrap();
            while let Ok(m) = rx.recv() {
                assert!(intact(&m), "neighbour's message corrupted");
                let echo = Msg {
                    seq: m.seq.to_native(),
                    data: m.data.to_vec(),
                    sum: m.sum.to_native(),
                };
                drop(m);
                tx.send(&echo).unwrap();
            }
        }
        "stream" => {
            // As fast as it can, until killed.
            let (mut tx, _rx) = conn.channel::<Msg, Msg>("c").unwrap();
            let mut buf = Vec::new();
            for seq in 0.. {
                let sum = stream::payload(seq, &mut buf);
                let m = Msg {
                    seq,
                    data: buf,
                    sum,
                };
                if tx.send(&m).is_err() {
                    return;
                }
                buf = m.data;
            }
        }
        "stop_stream" => {
            let (mut tx, mut rx) = conn.channel::<Msg, Msg>("c").unwrap();
            let receiving = std::thread::spawn(move || {
                let mut next = 0;
                while let Ok(m) = rx.recv() {
                    check_stream(&m, next);
                    next += 1;
                }
                next
            });
            let mut buf = Vec::new();
            for seq in 0..STOPPED_CHILD_SENDS {
                let sum = stream::payload(seq, &mut buf);
                let m = Msg {
                    seq,
                    data: buf,
                    sum,
                };
                tx.send(&m).unwrap();
                buf = m.data;
            }
            let received = receiving.join().unwrap();
            tx.send(&Msg {
                seq: SUMMARY,
                data: Vec::new(),
                sum: received,
            })
            .unwrap();
        }
        "idle" => {
            let _ends = conn.channel::<Msg, Msg>("c");
            std::thread::sleep(Duration::from_secs(60));
        }
        other => panic!("unknown role {other}"),
    }
}
