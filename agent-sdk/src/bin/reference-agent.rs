//! The reference SutazAI agent: runs `echo`, `sleep`, `fail`, `http.fetch`
//! (hosts on an allow list) and, when `OLLAMA_URL` is set, `text.summarize`.

use std::sync::Arc;
use std::time::Duration;

use agent_sdk::{start, AgentOptions, Executor, TaskContext, TaskError};
use clap::Parser;
use schemas::agent::Assignment;
use serde_json::{json, Value};
use uuid::Uuid;

#[derive(Debug, Clone, Parser)]
#[command(name = "reference-agent", version, about = "SutazAI reference agent")]
struct Args {
    /// Command API base URL.
    #[arg(long, env = "COMMAND_URL", default_value = "http://127.0.0.1:8080")]
    command_url: String,
    /// Query API base URL.
    #[arg(long, env = "QUERY_URL", default_value = "http://127.0.0.1:8081")]
    query_url: String,
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Attach to this agent instead of registering a new one.
    #[arg(long, env = "AGENT_ID")]
    agent_id: Option<Uuid>,
    /// Keep the agent id in this file: attach to the id in it when it exists,
    /// else register and write the new id there.
    #[arg(long, env = "AGENT_ID_FILE")]
    id_file: Option<std::path::PathBuf>,
    #[arg(long, env = "AGENT_NAME", default_value = "reference-agent")]
    name: String,
    #[arg(long, env = "MAX_CONCURRENT_TASKS", default_value_t = 4)]
    max_concurrent_tasks: u32,
    /// Hosts `http.fetch` may reach (comma separated).
    #[arg(
        long,
        env = "ALLOWED_HOSTS",
        default_value = "127.0.0.1,localhost",
        value_delimiter = ','
    )]
    allowed_hosts: Vec<String>,
    /// An Ollama endpoint for `text.summarize` (the capability is offered only when set).
    #[arg(long, env = "OLLAMA_URL")]
    ollama_url: Option<String>,
    #[arg(long, env = "OLLAMA_MODEL", default_value = "llama3.2")]
    ollama_model: String,
    /// The command service's API token (`SUTAZAI_API_TOKENS` there), if set.
    #[arg(long, env = "SUTAZAI_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Seconds between heartbeats.
    #[arg(long, env = "HEARTBEAT_SECS", default_value_t = 5)]
    heartbeat_secs: u64,
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
}

/// The reference task types.
pub struct ReferenceExecutor {
    http: reqwest::Client,
    allowed_hosts: Vec<String>,
    ollama: Option<(String, String)>,
}

#[async_trait::async_trait]
impl Executor for ReferenceExecutor {
    async fn execute(&self, task: &Assignment, ctx: &TaskContext) -> Result<Value, TaskError> {
        match task.task_type.as_str() {
            "echo" => Ok(task.input.clone()),
            "sleep" => {
                let secs = task.input["secs"].as_f64().unwrap_or(1.0);
                if !(0.0..=3600.0).contains(&secs) {
                    return Err(TaskError::permanent("secs must be 0 to 3600"));
                }
                for step in 1..=4u8 {
                    tokio::time::sleep(Duration::from_secs_f64(secs / 4.0)).await;
                    ctx.progress(step * 25, Some("sleeping")).await;
                }
                Ok(json!({"slept_secs": secs}))
            }
            "fail" => Err(TaskError {
                message: task.input["error"]
                    .as_str()
                    .unwrap_or("asked to fail")
                    .to_string(),
                retryable: task.input["retryable"].as_bool().unwrap_or(true),
            }),
            "http.fetch" => self.fetch(task).await,
            "text.summarize" => self.summarize(task).await,
            other => Err(TaskError::permanent(format!("unknown task type {other:?}"))),
        }
    }
}

impl ReferenceExecutor {
    async fn fetch(&self, task: &Assignment) -> Result<Value, TaskError> {
        let url = task.input["url"]
            .as_str()
            .ok_or_else(|| TaskError::permanent("input.url is required"))?;
        let parsed =
            reqwest::Url::parse(url).map_err(|e| TaskError::permanent(format!("bad url: {e}")))?;
        let host = parsed.host_str().unwrap_or_default();
        if !self.allowed_hosts.iter().any(|h| h == host) {
            return Err(TaskError::permanent(format!(
                "host {host:?} is not on the allow list"
            )));
        }
        let r = self
            .http
            .get(parsed)
            .send()
            .await
            .map_err(|e| TaskError::retryable(format!("fetch failed: {e}")))?;
        let status = r.status().as_u16();
        let body = r
            .text()
            .await
            .map_err(|e| TaskError::retryable(format!("reading the body failed: {e}")))?;
        let body: String = body.chars().take(65_536).collect();
        Ok(json!({"status": status, "body": body}))
    }

    async fn summarize(&self, task: &Assignment) -> Result<Value, TaskError> {
        let Some((url, model)) = &self.ollama else {
            return Err(TaskError::permanent("text.summarize needs OLLAMA_URL"));
        };
        let text = task.input["text"]
            .as_str()
            .ok_or_else(|| TaskError::permanent("input.text is required"))?;
        let r = self
            .http
            .post(format!("{}/api/generate", url.trim_end_matches('/')))
            .json(&json!({"model": model, "stream": false,
                          "prompt": format!("Summarize in two sentences:\n\n{text}")}))
            .send()
            .await
            .map_err(|e| TaskError::retryable(format!("Ollama unreachable: {e}")))?;
        let v: Value = r
            .json()
            .await
            .map_err(|e| TaskError::retryable(format!("Ollama answer unreadable: {e}")))?;
        Ok(json!({"summary": v["response"]}))
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    service_kit::telemetry::init(&args.log_format);
    let mut capabilities = vec![
        "echo".to_string(),
        "sleep".into(),
        "fail".into(),
        "http.fetch".into(),
    ];
    if args.ollama_url.is_some() {
        capabilities.push("text.summarize".into());
    }
    let executor = Arc::new(ReferenceExecutor {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default(),
        allowed_hosts: args.allowed_hosts.clone(),
        ollama: args
            .ollama_url
            .clone()
            .map(|u| (u, args.ollama_model.clone())),
    });
    let stored = args
        .id_file
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|s| Uuid::parse_str(s.trim()).ok());
    let options = AgentOptions {
        command_url: args.command_url.clone(),
        query_url: args.query_url.clone(),
        nats_url: args.nats_url.clone(),
        agent_id: args.agent_id.or(stored),
        name: args.name.clone(),
        agent_type: "reference".into(),
        capabilities,
        max_concurrent_tasks: args.max_concurrent_tasks,
        config: json!({"description": "reference agent: echo, sleep, fail, http.fetch, text.summarize"}),
        heartbeat_every: Duration::from_secs(args.heartbeat_secs.max(1)),
        poll_every: Duration::from_secs(10),
        api_token: args.api_token.clone(),
    };
    match start(options, executor).await {
        Ok(agent) => {
            tracing::info!(agent_id = %agent.agent_id, "reference agent running");
            if let Some(path) = &args.id_file {
                if let Err(e) = std::fs::write(path, agent.agent_id.to_string()) {
                    tracing::warn!(error = %e, "cannot keep the agent id");
                }
            }
            println!("agent {}", agent.agent_id);
            service_kit::shutdown_signal().await;
            agent.stop().await;
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("reference-agent: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
