//! Dispatch, capacity, priority, schedules, dependencies, liveness, retries
//! and cancellation with real agents.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use agent_sdk::Outcome;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tests::{agent_options, wait_until, System};
use uuid::Uuid;

use crate::support::{Api, Recorder};

fn time(v: &Value, field: &str) -> DateTime<Utc> {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {v}"))
        .parse()
        .unwrap()
}

async fn agent(sys: &System, caps: &[&str], max: u32) -> (agent_sdk::AgentHandle, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let opts = agent_options(&sys.command_url(), &sys.query_url(), &sys.nats, caps, max);
    (agent_sdk::start(opts, rec.clone()).await.unwrap(), rec)
}

#[tokio::test]
async fn tasks_reach_only_capable_agents_within_capacity_and_in_priority_order() {
    let sys = System::start_coordinated().await;
    let api = Api::new(&sys);
    let (echoer, echo_rec) = agent(&sys, &["echo"], 2).await;
    let (sleeper, sleep_rec) = agent(&sys, &["sleep"], 1).await;
    let mut echo_tasks = Vec::new();
    for i in 0..8 {
        echo_tasks.push(
            api.submit(
                json!({"task_type": "echo", "input": {"i": i}, "required_capabilities": ["echo"]}),
            )
            .await,
        );
    }
    let mut sleep_tasks = Vec::new();
    for _ in 0..3 {
        sleep_tasks.push(api.submit(json!({"task_type": "sleep", "input": {"secs": 0.3}, "required_capabilities": ["sleep"]})).await);
    }
    let done = api
        .wait_all(
            &[echo_tasks.clone(), sleep_tasks.clone()].concat(),
            &["succeeded"],
            Duration::from_secs(30),
        )
        .await;
    for t in &echo_tasks {
        assert_eq!(done[t]["agent_id"], echoer.agent_id.to_string());
    }
    for t in &sleep_tasks {
        assert_eq!(done[t]["agent_id"], sleeper.agent_id.to_string());
        assert_eq!(done[t]["progress"], 100);
    }
    assert!(echo_rec.max_running.load(Ordering::SeqCst) <= 2);
    assert_eq!(
        sleep_rec.max_running.load(Ordering::SeqCst),
        1,
        "capacity 1 is never exceeded"
    );
    // A task nobody can take stays queued.
    let orphan = api
        .submit(json!({"task_type": "echo", "required_capabilities": ["gpu"]}))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(api.task(orphan).await["status"], "queued");

    // Priority: queue five tasks for a capability nobody has yet, then start
    // one agent with capacity 1: they run highest priority first.
    let mut by_priority = Vec::new();
    for p in [2, 9, 5, 0, 7] {
        let id = api
            .submit(
                json!({"task_type": "echo", "priority": p, "required_capabilities": ["ranked"]}),
            )
            .await;
        by_priority.push((p, id));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ranked, ranked_rec) = agent(&sys, &["ranked"], 1).await;
    let ids: Vec<Uuid> = by_priority.iter().map(|(_, id)| *id).collect();
    api.wait_all(&ids, &["succeeded"], Duration::from_secs(30))
        .await;
    by_priority.sort_by_key(|(p, _)| std::cmp::Reverse(*p));
    let expected: Vec<Uuid> = by_priority.iter().map(|(_, id)| *id).collect();
    assert_eq!(*ranked_rec.started.lock().unwrap(), expected);
    for a in [echoer, sleeper, ranked] {
        a.stop().await;
    }
    sys.stop().await;
}

#[tokio::test]
async fn a_scheduled_task_runs_at_its_time_and_a_dag_runs_in_dependency_order() {
    let sys = System::start_coordinated().await;
    let api = Api::new(&sys);
    let (worker, _) = agent(&sys, &[], 4).await;

    let at = Utc::now() + chrono::Duration::milliseconds(1500);
    let scheduled = api
        .submit(json!({"task_type": "echo", "schedule_at": at}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(api.task(scheduled).await["status"], "scheduled");

    //   a → b ┐
    //   a → c ┴→ d → e ; f (fails) → g
    let a = api
        .submit(json!({"task_type": "sleep", "input": {"secs": 0.2}}))
        .await;
    let b = api
        .submit(json!({"task_type": "sleep", "input": {"secs": 0.2}, "depends_on": [a]}))
        .await;
    let c = api
        .submit(json!({"task_type": "echo", "depends_on": [a]}))
        .await;
    let d = api
        .submit(json!({"task_type": "echo", "depends_on": [b, c]}))
        .await;
    let e = api
        .submit(json!({"task_type": "echo", "depends_on": [d], "parent_task_id": a}))
        .await;
    let f = api
        .submit(json!({"task_type": "fail", "input": {"retryable": false}, "max_retries": 0}))
        .await;
    let g = api
        .submit(json!({"task_type": "echo", "depends_on": [f]}))
        .await;

    let done = api
        .wait_all(
            &[scheduled, a, b, c, d, e],
            &["succeeded"],
            Duration::from_secs(30),
        )
        .await;
    assert!(
        time(&done[&scheduled], "started_at") >= at,
        "not before its time"
    );
    for (child, parents) in [(b, vec![a]), (c, vec![a]), (d, vec![b, c]), (e, vec![d])] {
        for p in parents {
            assert!(
                time(&done[&child], "started_at") >= time(&done[&p], "finished_at"),
                "{child} started before its dependency {p} finished"
            );
        }
    }
    let failed = api
        .wait_all(&[f, g], &["failed"], Duration::from_secs(30))
        .await;
    assert!(
        failed[&g]["error"]
            .as_str()
            .unwrap()
            .contains(&f.to_string()),
        "{}",
        failed[&g]
    );
    assert_eq!(failed[&g]["agent_id"], Value::Null, "never dispatched");
    worker.stop().await;
    sys.stop().await;
}

#[tokio::test]
async fn a_killed_agent_is_marked_unhealthy_and_its_task_succeeds_on_another() {
    let sys = System::start_coordinated().await;
    let api = Api::new(&sys);
    let (doomed, _) = agent(&sys, &["sleep"], 1).await;
    let task = api.submit(json!({"task_type": "sleep", "input": {"secs": 2.0}, "required_capabilities": ["sleep"], "max_retries": 2})).await;
    wait_until(
        Duration::from_secs(10),
        "the task to run on the first agent",
        || async { api.task(task).await["status"] == "running" },
    )
    .await;
    let (survivor, _) = agent(&sys, &["sleep"], 1).await;
    let doomed_id = doomed.agent_id;
    doomed.kill().await;
    wait_until(
        Duration::from_secs(10),
        "the dead agent to be marked unhealthy",
        || async { api.agent(doomed_id).await["status"] == "unhealthy" },
    )
    .await;
    let done = api
        .wait_all(&[task], &["succeeded"], Duration::from_secs(30))
        .await;
    let view = &done[&task];
    assert_eq!(view["agent_id"], survivor.agent_id.to_string());
    assert_eq!(view["attempt"], 2);
    let failures = view["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0]["agent_id"], doomed_id.to_string());
    assert!(failures[0]["error"].as_str().unwrap().contains("unhealthy"));
    survivor.stop().await;
    sys.stop().await;
}

#[tokio::test]
async fn an_agent_restarted_after_it_was_marked_unhealthy_recovers_and_takes_work() {
    let sys = System::start_coordinated().await;
    let api = Api::new(&sys);
    let (first, _) = agent(&sys, &["echo"], 1).await;
    let id = first.agent_id;
    first.kill().await;
    wait_until(
        Duration::from_secs(10),
        "the dead agent to be marked unhealthy",
        || async { api.agent(id).await["status"] == "unhealthy" },
    )
    .await;
    // The same agent comes back (as `reference-agent --id-file` does after a
    // restart): it must attach, not give up because it is not inactive.
    let mut opts = agent_options(
        &sys.command_url(),
        &sys.query_url(),
        &sys.nats,
        &["echo"],
        1,
    );
    opts.agent_id = Some(id);
    let again = agent_sdk::start(opts, Arc::new(Recorder::default()))
        .await
        .expect("an unhealthy agent restarts");
    wait_until(
        Duration::from_secs(10),
        "its heartbeats to have it marked recovered",
        || async { api.agent(id).await["status"] == "active" },
    )
    .await;
    let task = api
        .submit(json!({"task_type": "echo", "input": {"x": 1}, "required_capabilities": ["echo"]}))
        .await;
    let done = api
        .wait_all(&[task], &["succeeded"], Duration::from_secs(20))
        .await;
    assert_eq!(done[&task]["agent_id"], id.to_string());
    again.stop().await;
    sys.stop().await;
}

#[tokio::test]
async fn retries_back_off_and_exhausting_them_ends_failed_with_every_attempt_recorded() {
    let sys = System::start_coordinated().await;
    let api = Api::new(&sys);
    let (worker, rec) = agent(&sys, &[], 2).await;
    let task = api
        .submit(json!({"task_type": "fail", "input": {"retryable": true}, "max_retries": 2}))
        .await;
    wait_until(
        Duration::from_secs(30),
        "the third attempt to fail",
        || async {
            let v = api.task(task).await;
            v["status"] == "failed" && v["attempt"] == 3
        },
    )
    .await;
    // No fourth attempt follows.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let view = api.task(task).await;
    assert_eq!(view["status"], "failed");
    assert_eq!(view["attempt"], 3);
    let failures = view["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 3, "{view}");
    assert!(failures
        .iter()
        .enumerate()
        .all(|(i, f)| f["attempt"] == i as u64 + 1 && f["error"] == "asked to fail"));
    assert_eq!(rec.started.lock().unwrap().len(), 3);
    // Backoff: 200 ms then 400 ms (±20 %) between a failure and the next start.
    let events: Vec<Value> = reqwest::get(format!("{}/api/v1/tasks/{task}/events", api.query))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let at = |t: &str, n: usize| -> DateTime<Utc> {
        events
            .iter()
            .filter(|e| e["event_type"] == t)
            .nth(n)
            .map(|e| time(e, "occurred_at"))
            .unwrap()
    };
    let first_gap = at("TaskRetryScheduled", 0);
    let queued_again = at("TaskQueued", 1);
    assert!(
        queued_again - at("TaskFailed", 0) >= chrono::Duration::milliseconds(160),
        "{first_gap}"
    );
    assert!(at("TaskQueued", 2) - at("TaskFailed", 1) >= chrono::Duration::milliseconds(320));
    worker.stop().await;
    sys.stop().await;
}

#[tokio::test]
async fn cancelling_a_running_task_stops_it_on_the_agent() {
    let sys = System::start_coordinated().await;
    let api = Api::new(&sys);
    let (worker, _) = agent(&sys, &[], 1).await;
    let task = api
        .submit(json!({"task_type": "sleep", "input": {"secs": 20.0}}))
        .await;
    wait_until(Duration::from_secs(10), "the task to run", || async {
        api.task(task).await["status"] == "running"
    })
    .await;
    api.post(
        &format!("/api/v1/tasks/{task}/cancel"),
        json!({"reason": "no longer needed"}),
    )
    .await;
    wait_until(
        Duration::from_secs(5),
        "the agent to stop the task",
        || async { worker.outcomes().contains(&Outcome::Cancelled(task)) },
    )
    .await;
    let view = api
        .wait_all(&[task], &["cancelled"], Duration::from_secs(5))
        .await;
    assert_eq!(view[&task]["cancel_reason"], "no longer needed");
    assert!(!worker.outcomes().contains(&Outcome::Completed(task)));
    worker.stop().await;
    sys.stop().await;
}

#[tokio::test]
async fn an_unstarted_assignment_times_out_at_its_lease_and_nats_heartbeats_keep_an_agent_alive() {
    let db = tests::TestDb::new().await;
    let nats = tests::NatsServer::start().await;
    let mut c = tests::coordinated_config(&db, &nats);
    c.lease_secs = 1;
    let command = tests::start_service(c).await;
    let projectors = tests::start_projectors(
        &tests::projectors_config(&db, &nats),
        projectors::all_projections(),
    )
    .await;
    let query = tests::start_query(&db, &nats).await;
    let api = Api {
        command: format!("http://{}", command.addr),
        query: format!("http://{}", query.addr),
        http: reqwest::Client::new(),
    };
    // An agent that only heartbeats (over NATS) and never starts anything.
    let agent: Uuid = api
        .post(
            "/api/v1/agents",
            json!({"name": "lazy", "agent_type": "t", "capabilities": ["lazy"]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    api.post(&format!("/api/v1/agents/{agent}/activate"), json!({}))
        .await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let beat = client.clone();
    let beats = tokio::spawn(async move {
        loop {
            let _ = beat
                .publish(
                    schemas::subjects::agent_heartbeat(&agent.to_string()),
                    r#"{"load":0}"#.into(),
                )
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let task = api
        .submit(json!({"task_type": "echo", "required_capabilities": ["lazy"], "max_retries": 1}))
        .await;
    // The first lease expiry is retried; the second ends the task.
    wait_until(
        Duration::from_secs(20),
        "the second lease to expire",
        || async {
            let v = api.task(task).await;
            v["status"] == "timed_out" && v["attempt"] == 2
        },
    )
    .await;
    let view = api.task(task).await;
    assert_eq!(
        view["attempt"], 2,
        "retried once after the first lease expired"
    );
    let failures = view["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 2);
    assert!(failures
        .iter()
        .all(|f| f["error"].as_str().unwrap().contains("lease")));
    assert_eq!(
        api.agent(agent).await["status"],
        "active",
        "NATS heartbeats kept it alive"
    );
    beats.abort();
    query.shutdown().await;
    projectors.shutdown().await;
    command.shutdown().await.unwrap();
}
