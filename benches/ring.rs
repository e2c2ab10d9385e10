//! In-process costs of the ring and codec paths: one thread sends and
//! receives on the two ends of one channel (no cross-core traffic), so this
//! measures remora's own instructions per message. Receivers are measured
//! in both receive modes: the default copy, and in place (trusted).
//!
//! ```text
//! cargo bench --bench ring
//! ```

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use remora::{ChannelConfig, Segment};
use std::hint::black_box;

#[derive(rkyv::Archive, rkyv::Serialize)]
struct Small {
    seq: u64,
    value: f64,
}

#[derive(rkyv::Archive, rkyv::Serialize)]
struct Nested {
    id: u64,
    name: String,
    values: Vec<u32>,
    tags: Vec<String>,
}

fn pair() -> (Segment, Segment) {
    let parent = Segment::create(&[ChannelConfig::new("c").capacity(1 << 20)]).unwrap();
    let child = Segment::open(parent.name()).unwrap();
    (parent, child)
}

fn raw(c: &mut Criterion) {
    let (parent, child) = pair();
    let (mut tx, _) = parent.raw_channel("c").unwrap();
    let (_, mut rx) = child.raw_channel("c").unwrap();
    let mut group = c.benchmark_group("raw send+recv");
    for trusted in [false, true] {
        if trusted {
            // SAFETY: the sender is ours, in this thread; it never writes a
            // frame after sending it.
            unsafe { rx.trust_peer() };
        }
        let mode = if trusted { "in place" } else { "copy" };
        for size in [0usize, 64, 1024, 65536] {
            let payload = vec![7u8; size];
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_function(format!("{size} B ({mode})"), |b| {
                b.iter(|| {
                    tx.send(black_box(&payload)).unwrap();
                    let m = rx.recv().unwrap();
                    black_box(m.len());
                })
            });
        }
    }
    group.finish();
}

fn typed(c: &mut Criterion) {
    let mut group = c.benchmark_group("typed send+recv");
    {
        let (parent, child) = pair();
        let (mut tx, _) = parent.channel::<Small, ()>("c").unwrap();
        let (_, mut rx) = child.channel::<(), Small>("c").unwrap();
        let msg = Small { seq: 1, value: 2.5 };
        group.bench_function("small struct (validated copy)", |b| {
            b.iter(|| {
                tx.send(black_box(&msg)).unwrap();
                black_box(rx.recv().unwrap().seq);
            })
        });
        // SAFETY: the sender is ours, in this thread; it never writes a
        // frame after sending it.
        unsafe { rx.trust_peer() };
        group.bench_function("small struct (validated in place)", |b| {
            b.iter(|| {
                tx.send(black_box(&msg)).unwrap();
                black_box(rx.recv().unwrap().seq);
            })
        });
        group.bench_function("small struct (unchecked in place)", |b| {
            b.iter(|| {
                tx.send(black_box(&msg)).unwrap();
                // SAFETY: the sender above is ours and sends valid `Small`s.
                black_box(unsafe { rx.recv_unchecked() }.unwrap().seq);
            })
        });
    }
    {
        let (parent, child) = pair();
        let (mut tx, _) = parent.channel::<Nested, ()>("c").unwrap();
        let (_, mut rx) = child.channel::<(), Nested>("c").unwrap();
        let msg = Nested {
            id: 9,
            name: "a name that does not fit inline".into(),
            values: (0..64).collect(),
            tags: vec!["one".into(), "two".into(), "a third, longer tag".into()],
        };
        for trusted in [false, true] {
            if trusted {
                // SAFETY: as above.
                unsafe { rx.trust_peer() };
            }
            let mode = if trusted { "in place" } else { "copy" };
            group.bench_function(format!("nested struct (validated {mode})"), |b| {
                b.iter_batched_ref(
                    || (),
                    |_| {
                        tx.send(black_box(&msg)).unwrap();
                        black_box(rx.recv().unwrap().values.len());
                    },
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, raw, typed);
criterion_main!(benches);
