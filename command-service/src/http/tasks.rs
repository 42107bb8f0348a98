//! Task commands over HTTP: submission (idempotent with a key), cancellation,
//! manual assignment and retry, and the agent-facing start/progress/complete/fail.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::Json;
use chrono::{Duration, Utc};
use domain::task::SubmitTask;
use domain::{DomainError, Task, TaskCommand};
use schemas::agent::ProgressUpdate;
use schemas::http::{
    AssignTaskRequest, CancelTaskRequest, CommandAccepted, CompleteTaskRequest, FailTaskRequest,
    ReportProgressRequest, StartTaskRequest, SubmitTaskRequest,
};
use schemas::subjects::{self, TASK};
use schemas::Problem;
use uuid::Uuid;

use super::context::RequestContext;
use super::extract::{OptionalJson, ValidJson};
use super::AppState;
use crate::error::ApiError;
use crate::store;
use service_kit::extract::IdPath;

static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Namespace of task ids derived from `(actor, idempotency key)`.
const IDEMPOTENT_TASK_NAMESPACE: Uuid = Uuid::from_u128(0x8f1e_33a0_54c6_4f7b_b3d2_9a41_6c0e_77d5);

/// The task id for an idempotency key: the same key from the same actor always
/// names the same task, so a retried submit finds it instead of creating another.
pub fn idempotent_task_id(actor: &str, key: &str) -> Uuid {
    Uuid::new_v5(
        &IDEMPOTENT_TASK_NAMESPACE,
        format!("{actor}\n{key}").as_bytes(),
    )
}

async fn run(
    state: &AppState,
    id: Uuid,
    ctx: &RequestContext,
    headers: &HeaderMap,
    command: TaskCommand,
) -> Result<Json<CommandAccepted>, ApiError> {
    super::run_command(&state.stores.tasks, TASK, id, ctx, headers, command).await
}

/// Submit a task. With an idempotency key (body or `Idempotency-Key`
/// header), a repeated submit by the same actor answers 200 with the task it
/// already created.
#[utoipa::path(post, path = "/api/v1/tasks", tag = "tasks",
    request_body = SubmitTaskRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Same as the body's idempotency_key")),
    responses(
        (status = 201, description = "Task submitted", body = CommandAccepted),
        (status = 200, description = "Idempotent replay: the task this key created", body = CommandAccepted),
        (status = 400, body = Problem), (status = 415, body = Problem), (status = 422, body = Problem),
    ))]
pub async fn submit_task(
    State(state): State<AppState>,
    ctx: RequestContext,
    headers: HeaderMap,
    ValidJson(body): ValidJson<SubmitTaskRequest>,
) -> Result<(StatusCode, Json<CommandAccepted>), ApiError> {
    submit(&state, ctx, &headers, body).await
}

/// Submit a task that only the given agent may run (as in the seed API).
#[utoipa::path(post, path = "/api/v1/agents/{id}/tasks", tag = "tasks",
    params(("id" = Uuid, Path, description = "Agent id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Same as the body's idempotency_key")),
    request_body = SubmitTaskRequest,
    responses(
        (status = 201, body = CommandAccepted), (status = 200, body = CommandAccepted),
        (status = 400, body = Problem), (status = 422, body = Problem),
    ))]
pub async fn submit_task_for_agent(
    State(state): State<AppState>,
    IdPath(agent_id): IdPath,
    ctx: RequestContext,
    headers: HeaderMap,
    ValidJson(mut body): ValidJson<SubmitTaskRequest>,
) -> Result<(StatusCode, Json<CommandAccepted>), ApiError> {
    if body.agent_id.is_some_and(|a| a != agent_id) {
        return Err(ApiError::Unprocessable {
            code: "validation_failed",
            detail: "agent_id in the body differs from the agent in the path".into(),
        });
    }
    body.agent_id = Some(agent_id);
    submit(&state, ctx, &headers, body).await
}

async fn submit(
    state: &AppState,
    ctx: RequestContext,
    headers: &HeaderMap,
    body: SubmitTaskRequest,
) -> Result<(StatusCode, Json<CommandAccepted>), ApiError> {
    let header_key = match headers.get(&IDEMPOTENCY_KEY) {
        None => None,
        Some(v) => Some(v.to_str().map(str::to_string).map_err(|_| {
            ApiError::bad_request("invalid_header", "Idempotency-Key must be visible ASCII")
        })?),
    };
    let key = match (header_key, body.idempotency_key) {
        (Some(h), Some(b)) if h != b => {
            return Err(ApiError::bad_request(
                "invalid_header",
                "Idempotency-Key header and body idempotency_key differ",
            ))
        }
        (h, b) => h.or(b),
    };
    let id = match &key {
        Some(k) => idempotent_task_id(&ctx.metadata.actor, k),
        None => Uuid::new_v4(),
    };
    let now = Utc::now();
    let command = TaskCommand::SubmitTask(SubmitTask {
        task_id: id,
        task_type: body.task_type,
        input: body.input,
        required_capabilities: body.required_capabilities,
        priority: body.priority,
        target_agent_id: body.agent_id,
        schedule_at: body.schedule_at,
        queue_timeout_secs: body.queue_timeout_secs,
        execution_timeout_secs: body.execution_timeout_secs,
        max_retries: body.max_retries,
        idempotency_key: key.clone(),
        parent_task_id: body.parent_task_id,
        depends_on: body.depends_on,
        now,
    });
    let metadata = ctx.event_metadata(now);
    let result = match key {
        // A fresh random id: nothing to load.
        None => store::execute_new(&state.stores.tasks, &id.to_string(), command, metadata).await,
        Some(_) => {
            store::execute(
                &state.stores.tasks,
                &id.to_string(),
                command,
                metadata,
                None,
            )
            .await
        }
    };
    match result {
        Ok(committed) => {
            tracing::info!(task_id = %id, "task submitted");
            Ok((
                StatusCode::CREATED,
                Json(super::accepted(TASK, id, committed.version, &ctx, false)),
            ))
        }
        // With a key, "already exists" (or losing the race to create it) means
        // this is a repeat: answer with the task the key already names.
        Err(e) if key.is_some() && is_already_created(&e) => {
            let (task, version): (Task, i64) =
                store::load(&state.stores.tasks, &id.to_string()).await?;
            if task.idempotency_key != key {
                return Err(e);
            }
            Ok((
                StatusCode::OK,
                Json(super::accepted(TASK, id, version, &ctx, true)),
            ))
        }
        Err(e) => Err(e),
    }
}

fn is_already_created(e: &ApiError) -> bool {
    let already = DomainError::AlreadyExists("task");
    matches!(e, ApiError::Conflict { code, .. } if *code == already.code() || *code == "version_conflict")
}

/// Cancel a task that has not finished; its agent is told if it holds it.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/cancel", tag = "tasks",
    params(("id" = Uuid, Path, description = "Task id"), super::IfMatch),
    request_body(content = Option<CancelTaskRequest>),
    responses(
        (status = 200, body = CommandAccepted), (status = 400, body = Problem),
        (status = 404, body = Problem), (status = 409, description = "Already finished, or version conflict", body = Problem),
    ))]
pub async fn cancel_task(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    ctx: RequestContext,
    headers: HeaderMap,
    OptionalJson(body): OptionalJson<CancelTaskRequest>,
) -> Result<Json<CommandAccepted>, ApiError> {
    let reason = body.and_then(|b| b.reason);
    run(
        &state,
        id,
        &ctx,
        &headers,
        TaskCommand::CancelTask { reason },
    )
    .await
}

/// Assign a queued task to an agent by hand (the coordinator does this
/// automatically); the agent must start it within the lease.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/assign", tag = "tasks",
    params(("id" = Uuid, Path, description = "Task id"), super::IfMatch),
    request_body = AssignTaskRequest,
    responses(
        (status = 200, body = CommandAccepted), (status = 400, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem),
    ))]
pub async fn assign_task(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    ctx: RequestContext,
    headers: HeaderMap,
    ValidJson(body): ValidJson<AssignTaskRequest>,
) -> Result<Json<CommandAccepted>, ApiError> {
    if !(1..=86_400).contains(&body.lease_secs) {
        return Err(ApiError::Unprocessable {
            code: "validation_failed",
            detail: "invalid lease_secs: must be 1 to 86400".into(),
        });
    }
    let command = TaskCommand::AssignTask {
        agent_id: body.agent_id,
        lease_expires_at: Utc::now() + Duration::seconds(i64::from(body.lease_secs)),
    };
    run(&state, id, &ctx, &headers, command).await
}

/// Retry a failed or timed-out task now (within its retry budget).
#[utoipa::path(post, path = "/api/v1/tasks/{id}/retry", tag = "tasks",
    params(("id" = Uuid, Path, description = "Task id"), super::IfMatch),
    responses(
        (status = 200, body = CommandAccepted), (status = 400, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem),
    ))]
pub async fn retry_task(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    ctx: RequestContext,
    headers: HeaderMap,
) -> Result<Json<CommandAccepted>, ApiError> {
    let command = TaskCommand::ScheduleRetry {
        not_before: Utc::now(),
    };
    run(&state, id, &ctx, &headers, command).await
}

/// The agent holding the task starts it.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/start", tag = "agent-facing",
    params(("id" = Uuid, Path, description = "Task id"), super::IfMatch),
    request_body = StartTaskRequest,
    responses(
        (status = 200, body = CommandAccepted), (status = 400, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem),
    ))]
pub async fn start_task(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    ctx: RequestContext,
    headers: HeaderMap,
    ValidJson(body): ValidJson<StartTaskRequest>,
) -> Result<Json<CommandAccepted>, ApiError> {
    let command = TaskCommand::StartTask {
        agent_id: body.agent_id,
    };
    run(&state, id, &ctx, &headers, command).await
}

/// The agent running the task reports progress. It is recorded as an event at
/// most once a second unless the percentage moves by 10 or more (`coalesced`
/// says when it was not); every report reaches live subscribers on NATS
/// `sutazai.progress.task.<id>` and the query service's WebSocket and SSE.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/progress", tag = "agent-facing",
    params(("id" = Uuid, Path, description = "Task id"), super::IfMatch),
    request_body = ReportProgressRequest,
    responses(
        (status = 200, body = CommandAccepted), (status = 400, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem),
    ))]
pub async fn report_progress(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    ctx: RequestContext,
    headers: HeaderMap,
    ValidJson(body): ValidJson<ReportProgressRequest>,
) -> Result<Json<CommandAccepted>, ApiError> {
    let now = Utc::now();
    let command = TaskCommand::ReportProgress {
        agent_id: body.agent_id,
        percent: body.percent,
        message: body.message.clone(),
        now,
    };
    let expected = super::context::expected_version(&headers)?;
    let committed = store::execute(
        &state.stores.tasks,
        &id.to_string(),
        command,
        ctx.event_metadata(now),
        expected,
    )
    .await?;
    let recorded = !committed.events.is_empty();
    // Every accepted report reaches live subscribers, recorded or not.
    let update = ProgressUpdate {
        task_id: id,
        agent_id: body.agent_id,
        percent: body.percent,
        message: body.message,
        at: now,
        recorded,
    };
    match serde_json::to_vec(&update) {
        Ok(bytes) => {
            if let Err(e) = state
                .nats
                .publish(subjects::task_progress(&id.to_string()), bytes.into())
                .await
            {
                tracing::warn!(error = %e, "progress not published to live subscribers");
            }
        }
        Err(e) => tracing::warn!(error = %e, "progress not encoded"),
    }
    let mut accepted = super::accepted(TASK, id, committed.version, &ctx, false);
    accepted.coalesced = !recorded;
    Ok(Json(accepted))
}

/// The agent running the task reports success and its output.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/complete", tag = "agent-facing",
    params(("id" = Uuid, Path, description = "Task id"), super::IfMatch),
    request_body = CompleteTaskRequest,
    responses(
        (status = 200, body = CommandAccepted), (status = 400, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem),
    ))]
pub async fn complete_task(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    ctx: RequestContext,
    headers: HeaderMap,
    ValidJson(body): ValidJson<CompleteTaskRequest>,
) -> Result<Json<CommandAccepted>, ApiError> {
    let command = TaskCommand::CompleteTask {
        agent_id: body.agent_id,
        output: body.output,
    };
    run(&state, id, &ctx, &headers, command).await
}

/// The agent holding the task reports that its attempt failed.
#[utoipa::path(post, path = "/api/v1/tasks/{id}/fail", tag = "agent-facing",
    params(("id" = Uuid, Path, description = "Task id"), super::IfMatch),
    request_body = FailTaskRequest,
    responses(
        (status = 200, body = CommandAccepted), (status = 400, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem),
    ))]
pub async fn fail_task(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    ctx: RequestContext,
    headers: HeaderMap,
    ValidJson(body): ValidJson<FailTaskRequest>,
) -> Result<Json<CommandAccepted>, ApiError> {
    let command = TaskCommand::FailTask {
        agent_id: Some(body.agent_id),
        error: body.error,
        retryable: body.retryable,
    };
    run(&state, id, &ctx, &headers, command).await
}
