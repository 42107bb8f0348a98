//! Agent commands over HTTP.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::Utc;
use domain::agent::{CreateAgent, UpdateAgent};
use domain::{Agent, AgentCommand};
use schemas::agent::Heartbeat;
use schemas::http::{
    CommandAccepted, CreateAgentRequest, HeartbeatAccepted, RetireAgentRequest, UpdateAgentRequest,
};
use schemas::status::AgentStatus;
use schemas::subjects::AGENT;
use schemas::Problem;
use uuid::Uuid;

use super::context::RequestContext;
use super::extract::{OptionalJson, ValidJson};
use super::AppState;
use crate::error::ApiError;
use crate::{liveness, store};
use service_kit::extract::IdPath;

async fn run(
    state: &AppState,
    id: Uuid,
    ctx: &RequestContext,
    headers: &HeaderMap,
    command: AgentCommand,
) -> Result<Json<CommandAccepted>, ApiError> {
    super::run_command(&state.stores.agents, AGENT, id, ctx, headers, command).await
}

/// Register an agent. It starts `inactive`; activate it to receive tasks.
#[utoipa::path(post, path = "/api/v1/agents", tag = "agents",
    request_body = CreateAgentRequest,
    responses(
        (status = 201, description = "Agent created", body = CommandAccepted),
        (status = 400, description = "Malformed body or header", body = Problem),
        (status = 415, description = "Not JSON", body = Problem),
        (status = 422, description = "Invalid field", body = Problem),
    ))]
pub async fn create_agent(
    State(state): State<AppState>,
    ctx: RequestContext,
    ValidJson(body): ValidJson<CreateAgentRequest>,
) -> Result<(StatusCode, Json<CommandAccepted>), ApiError> {
    let id = Uuid::new_v4();
    let command = AgentCommand::CreateAgent(CreateAgent {
        name: body.name,
        agent_type: body.agent_type,
        capabilities: body.capabilities,
        config: body.config,
        max_concurrent_tasks: body.max_concurrent_tasks,
    });
    let metadata = ctx.event_metadata(Utc::now());
    let committed = store::execute(
        &state.stores.agents,
        &id.to_string(),
        command,
        metadata,
        None,
    )
    .await?;
    tracing::info!(agent_id = %id, "agent created");
    Ok((
        StatusCode::CREATED,
        Json(super::accepted(AGENT, id, committed.version, &ctx, false)),
    ))
}

/// Change an agent's name, capabilities, config or capacity.
#[utoipa::path(patch, path = "/api/v1/agents/{id}", tag = "agents",
    params(("id" = Uuid, Path, description = "Agent id"), super::IfMatch),
    request_body = UpdateAgentRequest,
    responses(
        (status = 200, description = "Agent updated", body = CommandAccepted),
        (status = 400, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "Retired, or version conflict", body = Problem),
        (status = 422, body = Problem),
    ))]
pub async fn update_agent(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    ctx: RequestContext,
    headers: HeaderMap,
    ValidJson(body): ValidJson<UpdateAgentRequest>,
) -> Result<Json<CommandAccepted>, ApiError> {
    let command = AgentCommand::UpdateAgent(UpdateAgent {
        name: body.name,
        capabilities: body.capabilities,
        config: body.config,
        max_concurrent_tasks: body.max_concurrent_tasks,
    });
    run(&state, id, &ctx, &headers, command).await
}

/// Make an inactive agent eligible for tasks.
#[utoipa::path(post, path = "/api/v1/agents/{id}/activate", tag = "agents",
    params(("id" = Uuid, Path, description = "Agent id"), super::IfMatch),
    responses(
        (status = 200, body = CommandAccepted), (status = 400, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem),
    ))]
pub async fn activate_agent(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    ctx: RequestContext,
    headers: HeaderMap,
) -> Result<Json<CommandAccepted>, ApiError> {
    run(&state, id, &ctx, &headers, AgentCommand::ActivateAgent).await
}

/// Stop sending tasks to an agent.
#[utoipa::path(post, path = "/api/v1/agents/{id}/deactivate", tag = "agents",
    params(("id" = Uuid, Path, description = "Agent id"), super::IfMatch),
    responses(
        (status = 200, body = CommandAccepted), (status = 400, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem),
    ))]
pub async fn deactivate_agent(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    ctx: RequestContext,
    headers: HeaderMap,
) -> Result<Json<CommandAccepted>, ApiError> {
    run(&state, id, &ctx, &headers, AgentCommand::DeactivateAgent).await
}

/// Retire an agent for good. A body with a `reason` is optional.
#[utoipa::path(delete, path = "/api/v1/agents/{id}", tag = "agents",
    params(("id" = Uuid, Path, description = "Agent id"), super::IfMatch),
    request_body(content = Option<RetireAgentRequest>),
    responses(
        (status = 200, body = CommandAccepted), (status = 400, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem),
    ))]
pub async fn retire_agent(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    ctx: RequestContext,
    headers: HeaderMap,
    OptionalJson(body): OptionalJson<RetireAgentRequest>,
) -> Result<Json<CommandAccepted>, ApiError> {
    let reason = body.and_then(|b| b.reason);
    run(
        &state,
        id,
        &ctx,
        &headers,
        AgentCommand::RetireAgent { reason },
    )
    .await
}

/// An agent says it is alive (not stored as an event). Agents also may send
/// heartbeats on NATS `sutazai.agents.<id>.heartbeat`.
#[utoipa::path(post, path = "/api/v1/agents/{id}/heartbeat", tag = "agent-facing",
    params(("id" = Uuid, Path, description = "Agent id")),
    request_body(content = Option<Heartbeat>),
    responses(
        (status = 200, body = HeartbeatAccepted), (status = 400, body = Problem),
        (status = 404, body = Problem), (status = 409, description = "Retired", body = Problem),
    ))]
pub async fn heartbeat(
    State(state): State<AppState>,
    IdPath(id): IdPath,
    // Authenticates like every other call (the heartbeat stores no metadata).
    _ctx: RequestContext,
    OptionalJson(body): OptionalJson<Heartbeat>,
) -> Result<Json<HeartbeatAccepted>, ApiError> {
    let (agent, _): (Agent, i64) = store::load(&state.stores.agents, &id.to_string()).await?;
    let status = match agent.status {
        None => return Err(ApiError::NotFound(format!("agent {id} not found"))),
        Some(AgentStatus::Retired) => {
            return Err(ApiError::Conflict {
                code: "illegal_transition",
                detail: format!("agent {id} is retired"),
            })
        }
        Some(s) => s,
    };
    liveness::record(&state.pool, id, &body.unwrap_or_default())
        .await
        .map_err(|e| ApiError::Unavailable(format!("cannot record the heartbeat: {e}")))?;
    Ok(Json(HeartbeatAccepted {
        agent_id: id,
        status: status.to_string(),
        window_secs: state.heartbeat_window_secs,
    }))
}
