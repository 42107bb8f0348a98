//! Killing the active coordinator: the standby takes over and every task
//! still finishes exactly once.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tests::*;

use crate::support::{Api, Recorder};

#[tokio::test]
async fn the_standby_coordinator_takes_over_and_every_task_finishes_exactly_once() {
    let db = TestDb::new().await;
    let nats = NatsServer::start().await;
    let first = start_service(coordinated_config(&db, &nats)).await;
    let first_leads = first.coordinator.clone();
    wait_until(
        Duration::from_secs(10),
        "the first coordinator to lead",
        || async {
            first_leads
                .leader
                .load(std::sync::atomic::Ordering::Relaxed)
        },
    )
    .await;
    let mut first = Some(first);
    let second = start_service(coordinated_config(&db, &nats)).await;
    let projectors = start_projectors(
        &projectors_config(&db, &nats),
        projectors::all_projections(),
    )
    .await;
    let query = start_query(&db, &nats).await;
    let (command_url, query_url) = (
        format!("http://{}", second.addr),
        format!("http://{}", query.addr),
    );
    let api = Api {
        command: command_url.clone(),
        query: query_url.clone(),
        http: reqwest::Client::new(),
    };
    let mut agents = Vec::new();
    for _ in 0..3 {
        let opts = agent_options(&command_url, &query_url, &nats, &["echo"], 4);
        agents.push(
            agent_sdk::start(opts, Arc::new(Recorder::default()))
                .await
                .unwrap(),
        );
    }
    let mut tasks = Vec::new();
    for i in 0..200 {
        tasks.push(
            api.submit(
                json!({"task_type": "echo", "input": {"i": i}, "required_capabilities": ["echo"]}),
            )
            .await,
        );
        if i == 80 {
            if let Some(leader) = first.take() {
                leader.abort().await;
            }
        }
    }
    let pool = db.pool().await;
    api.wait_all(&tasks, &["succeeded"], Duration::from_secs(60))
        .await;
    assert!(second
        .coordinator
        .leader
        .load(std::sync::atomic::Ordering::Relaxed));
    let per_task: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT aggregate_id, count(*) FILTER (WHERE event_type = 'TaskSucceeded'), \
                count(*) FILTER (WHERE event_type = 'TaskAssigned') \
         FROM events WHERE aggregate_type = 'task' GROUP BY aggregate_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(per_task.len(), 200);
    assert!(
        per_task.iter().all(|(_, ok, _)| *ok == 1),
        "every task succeeded exactly once"
    );
    let reassigned = per_task
        .iter()
        .filter(|(_, _, assigned)| *assigned > 1)
        .count();
    println!("tasks assigned more than once (lease expiry after failover): {reassigned}");
    for a in agents {
        a.stop().await;
    }
    query.shutdown().await;
    projectors.shutdown().await;
    second.shutdown().await.unwrap();
}
