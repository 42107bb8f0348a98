//! Zero-downtime rebuilds: under concurrent commands the swapped-in copy
//! equals a from-scratch build; reads keep answering during the rebuild; an
//! aborted rebuild leaves the live projection intact; two cannot run at once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use projectors::read_models::ReadModels;
use projectors::rebuild::{rebuild, Finish, RebuildError};
use serde_json::json;
use tests::*;

use crate::support::Apis;

async fn js(sys: &System) -> async_nats::jetstream::Context {
    async_nats::jetstream::new(async_nats::connect(sys.nats.url()).await.unwrap())
}

/// Rebuilds the read models of `sys` from its stream, without progress output.
async fn rebuild_read_models(
    sys: &System,
    finish: Finish,
    batch: usize,
) -> Result<projectors::rebuild::RebuildReport, RebuildError> {
    let js = js(sys).await;
    rebuild(
        &sys.pool,
        &js,
        schemas::subjects::DEFAULT_STREAM,
        &ReadModels,
        finish,
        batch,
        |_, _| {},
    )
    .await
}

async fn seed(api: &Apis, n: usize) {
    let agent = api.agent("w", "worker", &["x"]).await;
    for i in 0..n {
        let (t, _) = api
            .cmd(
                "/api/v1/tasks",
                json!({"task_type": "echo", "input": {"i": i}}),
            )
            .await;
        if i % 2 == 0 {
            api.cmd(
                &format!("/api/v1/tasks/{t}/assign"),
                json!({"agent_id": agent}),
            )
            .await;
            api.cmd(
                &format!("/api/v1/tasks/{t}/start"),
                json!({"agent_id": agent}),
            )
            .await;
            api.cmd(
                &format!("/api/v1/tasks/{t}/complete"),
                json!({"agent_id": agent, "output": {"i": i}}),
            )
            .await;
        }
    }
}

#[tokio::test]
async fn a_rebuild_under_load_swaps_in_a_copy_equal_to_a_from_scratch_build() {
    let sys = System::start().await;
    let api = Arc::new(Apis::new(&sys));
    seed(&api, 40).await;
    sys.caught_up().await;
    let seeded: i64 = api.read("/api/v1/tasks?limit=1").await["total"]
        .as_i64()
        .unwrap();

    // Commands keep coming during the rebuild…
    let load_api = api.clone();
    let load = tokio::spawn(async move {
        for i in 0..60 {
            let (t, _) = load_api
                .cmd(
                    "/api/v1/tasks",
                    json!({"task_type": "load", "input": {"i": i}}),
                )
                .await;
            if i % 2 == 0 {
                load_api
                    .cmd(&format!("/api/v1/tasks/{t}/cancel"), json!({}))
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    });
    // …and reads keep answering from the live copy, never a half-built one.
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let (read_api, read_done, read_count) = (api.clone(), done.clone(), reads.clone());
    let reader = tokio::spawn(async move {
        while !read_done.load(Ordering::SeqCst) {
            let total = read_api.read("/api/v1/tasks?limit=1").await["total"]
                .as_i64()
                .unwrap();
            assert!(
                total >= seeded,
                "a read saw {total} < {seeded} tasks during the rebuild"
            );
            read_count.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let report = rebuild_read_models(&sys, Finish::Swap, 50).await.unwrap();
    assert!(report.swapped && report.events > 0, "{report:?}");
    load.await.unwrap();
    done.store(true, Ordering::SeqCst);
    reader.await.unwrap();
    assert!(reads.load(Ordering::SeqCst) > 0);

    // The live projector carries on over the swapped-in tables.
    sys.caught_up().await;
    assert_eq!(api.read("/api/v1/tasks?task_type=load").await["total"], 60);
    let verify = rebuild_read_models(&sys, Finish::Verify, 200)
        .await
        .unwrap();
    assert!(verify.differences.is_empty(), "{:?}", verify.differences);

    // And equals a from-scratch build in another database.
    let scratch = TestDb::new().await;
    let mut cfg = projectors_config(&scratch, &sys.nats);
    cfg.consumer_prefix = "scratch".into();
    let fresh = start_projectors(&cfg, projectors::all_projections()).await;
    let scratch_pool = scratch.pool().await;
    let last = stream_last_sequence(&sys.nats.url()).await as i64;
    wait_until(Duration::from_secs(30), "the scratch build", || async {
        let cp: Option<i64> = sqlx::query_scalar(
            "SELECT stream_sequence FROM projector_checkpoints WHERE projection = $1",
        )
        .bind(projectors::read_models::NAME)
        .fetch_optional(&scratch_pool)
        .await
        .unwrap_or(None);
        cp.unwrap_or(0) >= last
    })
    .await;
    assert_eq!(
        dump_read_models(&sys.pool).await,
        dump_read_models(&scratch_pool).await
    );
    fresh.shutdown().await;
    sys.stop().await;
}

#[tokio::test]
async fn an_aborted_rebuild_leaves_the_live_projection_intact_and_two_cannot_run_at_once() {
    let sys = System::start().await;
    let api = Apis::new(&sys);
    seed(&api, 30).await;
    sys.caught_up().await;
    let before = dump_read_models(&sys.pool).await;

    let (pool, jsx) = (sys.pool.clone(), js(&sys).await);
    let started = Arc::new(AtomicBool::new(false));
    let flag = started.clone();
    let slow = tokio::spawn(async move {
        rebuild(
            &pool,
            &jsx,
            schemas::subjects::DEFAULT_STREAM,
            &ReadModels,
            Finish::Swap,
            5,
            |_, _| {
                flag.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(30));
            },
        )
        .await
    });
    wait_until(Duration::from_secs(10), "the rebuild to start", || async {
        started.load(Ordering::SeqCst)
    })
    .await;
    let second = rebuild_read_models(&sys, Finish::Swap, 50).await;
    assert!(
        matches!(second, Err(RebuildError::AlreadyRunning(_))),
        "{second:?}"
    );
    slow.abort();
    let _ = slow.await;

    assert_eq!(
        dump_read_models(&sys.pool).await,
        before,
        "the live projection is untouched"
    );
    assert_eq!(api.read("/api/v1/tasks?limit=1").await["total"], 30);
    // The next rebuild cleans up the abandoned copy and finds nothing to fix.
    let mut verify = None;
    for _ in 0..50 {
        match rebuild_read_models(&sys, Finish::Verify, 200).await {
            Err(RebuildError::AlreadyRunning(_)) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => {
                verify = Some(other.unwrap());
                break;
            }
        }
    }
    let verify = verify.expect("the aborted rebuild's lock was released");
    assert!(verify.differences.is_empty(), "{:?}", verify.differences);
    let leftovers: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'rebuild\\_%' OR nspname LIKE 'retired\\_%'")
        .fetch_one(&sys.pool)
        .await
        .unwrap();
    assert_eq!(leftovers, 0);
    sys.stop().await;
}
