//! Agent heartbeats: recorded in `agent_liveness`, never as events (they
//! would grow the aggregate without bound). The coordinator compares them
//! with its window.

use chrono::Utc;
use futures::StreamExt;
use schemas::agent::Heartbeat;
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

/// Records a heartbeat of a known agent; false if no such agent exists.
pub async fn record(pool: &PgPool, agent_id: Uuid, heartbeat: &Heartbeat) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO agent_liveness (agent_id, last_seen_at, load) \
         SELECT $1, $2, $3 WHERE EXISTS \
             (SELECT 1 FROM events WHERE aggregate_type = 'agent' AND aggregate_id = $1::text) \
         ON CONFLICT (agent_id) DO UPDATE SET last_seen_at = EXCLUDED.last_seen_at, load = EXCLUDED.load",
    )
    .bind(agent_id)
    .bind(Utc::now())
    .bind(heartbeat.load.map(|l| l.min(i32::MAX as u32) as i32))
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Takes heartbeats from `sutazai.agents.<id>.heartbeat` (one instance of a
/// queue group handles each). A malformed one is logged and dropped: it is
/// ephemeral, and the next one replaces it.
pub async fn listen(pool: PgPool, nats: async_nats::Client, mut shutdown: watch::Receiver<bool>) {
    let mut sub = match nats
        .queue_subscribe(
            schemas::subjects::AGENT_HEARTBEATS,
            "sutazai-heartbeats".into(),
        )
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot subscribe to agent heartbeats over NATS");
            return;
        }
    };
    loop {
        let msg = tokio::select! {
            m = sub.next() => match m { Some(m) => m, None => return },
            _ = shutdown.changed() => return,
        };
        let agent = msg
            .subject
            .split('.')
            .nth(2)
            .and_then(|s| Uuid::parse_str(s).ok());
        let body = if msg.payload.is_empty() {
            Ok(Heartbeat::default())
        } else {
            serde_json::from_slice::<Heartbeat>(&msg.payload)
        };
        match (agent, body) {
            (Some(agent_id), Ok(hb)) => match record(&pool, agent_id, &hb).await {
                Ok(true) => {}
                Ok(false) => tracing::debug!(%agent_id, "heartbeat from an unknown agent ignored"),
                Err(e) => tracing::warn!(error = %e, "cannot record a heartbeat"),
            },
            (None, _) => {
                tracing::warn!(subject = %msg.subject, "heartbeat subject names no agent id")
            }
            (_, Err(e)) => {
                tracing::warn!(subject = %msg.subject, error = %e, "malformed heartbeat dropped")
            }
        }
    }
}
