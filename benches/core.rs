//! Micro-benchmarks of the hot pieces: signing and verifying a request, the storage codec, and
//! the store's enqueue → take → report cycle (in memory; durability is measured separately with
//! `durable`, which includes the flush and fdatasync), and what the metrics add to a request.
//!
//! Run: `cargo bench --bench core`

use std::collections::BTreeMap;

use criterion::{Criterion, criterion_group, criterion_main};
use orange::protocol::Signer;
use orange::protocol::TaskStatus;
use orange::protocol::task::new_task_id;
use orange::server::codec;
use orange::server::store::{
    AgentRecord, AgentStatus, Delivery, Outcome, Policy, Store, Stream, TaskRecord, TaskSpec,
};

fn signing(c: &mut Criterion) {
    let signer = Signer::new("0123456789abcdef0123456789abcdef");
    let body = vec![b'x'; 200];
    let sig = signer.sign("web-01", &body, "1795677383");
    c.bench_function("sign 200-byte body", |b| b.iter(|| signer.sign("web-01", &body, "1795677383")));
    c.bench_function("verify 200-byte body", |b| {
        b.iter(|| signer.verify("web-01", &body, "1795677383", &sig))
    });
}

fn task() -> TaskRecord {
    let payload = "x".repeat(200);
    let spec = TaskSpec {
        app_id: "web-01",
        task_type: "shell",
        payload: &payload,
        env: &std::collections::BTreeMap::new(),
        cwd: None,
        user: None,
        stdin: &[],
        timeout_secs: 600,
        ttl_secs: 86_400,
    };
    TaskRecord::new(spec, new_task_id(), 1_795_677_383_000)
}

fn codec_bench(c: &mut Criterion) {
    let record = task();
    let bytes = codec::encode(&record);
    c.bench_function("codec encode task", |b| b.iter(|| codec::encode(&record)));
    c.bench_function("codec decode task", |b| b.iter(|| codec::decode::<TaskRecord>(&bytes).unwrap()));
}

fn store_bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 64 * 1024 * 1024, Policy::default()).unwrap();
    let agent = AgentRecord {
        app_id: "web-01".into(),
        secret: "s".into(),
        labels: BTreeMap::new(),
        version: None,
        hostname: None,
        registered_at_ms: 0,
        last_seen_ms: 0,
        processed_task_count: 0,
        status: AgentStatus::Accepted,
    };
    store.put_agent(&agent).unwrap();
    let done = Outcome {
        status: TaskStatus::Succeeded,
        exit_code: Some(0),
        error: None,
        duration_ms: Some(1),
        output: vec![(Stream::Stdout, b"ok\n".to_vec())],
        attempt: None,
    };
    c.bench_function("store enqueue+take+report", |b| {
        b.iter(|| {
            let mut tasks = vec![task()];
            store.enqueue(&mut tasks).unwrap();
            let taken =
                store.take_next("web-01", Delivery::Acknowledged, &[], &mut Vec::new(), 1).unwrap().unwrap();
            store.apply_report("web-01", taken.id, &done, 2).unwrap();
        })
    });
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    c.bench_function("store durable (flush + fdatasync)", |b| {
        b.iter(|| {
            store.put_agent(&agent).unwrap();
            runtime.block_on(store.durable()).unwrap();
        })
    });
}

fn metrics_bench(c: &mut Criterion) {
    use orange::server::http::metrics::route_class;
    use orange::server::metrics::Metrics;
    let metrics = Metrics::new();
    c.bench_function("metrics: classify and count one HTTP answer", |b| {
        b.iter(|| metrics.http_response(route_class(std::hint::black_box("/orange-forge/api/getTask")), 200))
    });
}

criterion_group!(benches, signing, codec_bench, store_bench, metrics_bench);
criterion_main!(benches);
