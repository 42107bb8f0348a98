use serde_json::Value;

/// Everything that can be asked of an agent.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentCommand {
    CreateAgent(CreateAgent),
    UpdateAgent(UpdateAgent),
    ActivateAgent,
    DeactivateAgent,
    /// Issued by the coordinator when heartbeats stop.
    MarkAgentUnhealthy {
        reason: String,
    },
    /// Issued by the coordinator when heartbeats resume.
    MarkAgentRecovered,
    RetireAgent {
        reason: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct CreateAgent {
    pub name: String,
    pub agent_type: String,
    pub capabilities: Vec<String>,
    pub config: Value,
    pub max_concurrent_tasks: u32,
}

/// Fields left `None` are kept as they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateAgent {
    pub name: Option<String>,
    pub capabilities: Option<Vec<String>>,
    pub config: Option<Value>,
    pub max_concurrent_tasks: Option<u32>,
}
