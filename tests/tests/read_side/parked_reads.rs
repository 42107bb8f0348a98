//! A read waiting for its `min_version` gives back its in-flight slot
//! (`QUERY_MAX_IN_FLIGHT`), up to `QUERY_MAX_PARKED_READS` such reads; past
//! that it keeps its slot, and what finds no slot is shed as before.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::System;

use crate::support::Apis;

/// Starts `readers` reads of `task` at `min_version`, against a query
/// service with two in-flight slots and `max_parked` parked reads.
async fn waiting_readers(
    sys: &System,
    max_parked: usize,
    task: &str,
    min_version: i64,
    readers: usize,
) -> (
    query_service::Server,
    String,
    Vec<tokio::task::JoinHandle<(u16, Value)>>,
) {
    let mut c = tests::query_config(&sys.db, &sys.nats);
    c.max_in_flight = 2;
    c.max_parked_reads = max_parked;
    c.min_version_wait_ms = 20_000;
    // A store of its own: the system's query service owns the default one.
    c.search.vector_dir = sys.db.vector_dir().join(format!("parked-{max_parked}"));
    let query = tests::start_query_with(c).await;
    let url = format!("http://{}", query.addr);
    let http = reqwest::Client::new();
    // One after another, 100 ms apart: each has parked (or taken a slot to
    // wait on, or been shed) before the next arrives, so the count of each
    // does not depend on how a burst interleaves.
    let handles = (0..readers)
        .map(|i| {
            let http = http.clone();
            let uri = format!("{url}/api/v1/tasks/{task}?min_version={min_version}");
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100 * i as u64)).await;
                let r = http.get(&uri).send().await.expect("answer");
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or(Value::Null))
            })
        })
        .collect();
    (query, url, handles)
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_waiting_for_their_version_give_back_their_in_flight_slot() {
    let sys = System::start().await;
    let api = Apis::new(&sys);
    let task = json!({"task_type": "echo", "input": {"text": "wait for me"}});
    let (first, v1) = api.cmd("/api/v1/tasks", task.clone()).await;
    let (second, v2) = api.cmd("/api/v1/tasks", task).await;
    sys.caught_up().await;
    let http = reqwest::Client::new();

    // Twenty reads wait for a version not written yet, on two slots: all of
    // them park, and a plain read is still answered while they wait.
    let (query, url, readers) = waiting_readers(&sys, 1024, &first, v1 + 1, 20).await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let plain = format!("{url}/api/v1/tasks/{first}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = http.get(&plain).send().await.expect("answer");
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 503, "a plain read is answered or shed");
        assert!(Instant::now() < deadline, "the plain read was never let in");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        readers.iter().all(|h| !h.is_finished()),
        "no waiting read was shed or answered before its version"
    );
    let (_, v) = api
        .cmd(&format!("/api/v1/tasks/{first}/cancel"), json!({}))
        .await;
    assert_eq!(v, v1 + 1);
    let mut answers = Vec::new();
    for h in readers {
        let (status, body) = h.await.expect("reader");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "cancelled");
        assert_eq!(body["version"], v);
        answers.push(body);
    }
    // A parked read is answered with the row the version checker read: the
    // same task, field for field, as a plain read of it now.
    let now: serde_json::Value = http
        .get(&plain)
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    assert!(answers.iter().all(|a| *a == now), "{answers:?} vs {now}");
    query.shutdown().await;

    // Five may park: five park, two more wait on the two slots, and the
    // other thirteen are shed at once, as any read beyond the slots is.
    let (query, _, readers) = waiting_readers(&sys, 5, &second, v2 + 1, 20).await;
    until("thirteen reads shed", || {
        readers.iter().filter(|h| h.is_finished()).count() >= 13
    })
    .await;
    api.cmd(&format!("/api/v1/tasks/{second}/cancel"), json!({}))
        .await;
    let (mut answered, mut shed) = (0, 0);
    for h in readers {
        let (status, body) = h.await.expect("reader");
        match status {
            200 => {
                assert_eq!(body["status"], "cancelled");
                answered += 1;
            }
            503 => {
                assert_eq!(body["code"], "overloaded", "{body}");
                shed += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((answered, shed), (7, 13));
    query.shutdown().await;
    sys.stop().await;
}
