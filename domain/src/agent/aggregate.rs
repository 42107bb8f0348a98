use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use schemas::events::{
    AgentActivated, AgentCreated, AgentDeactivated, AgentEvent, AgentMarkedUnhealthy,
    AgentRecovered, AgentRetired, AgentUpdated,
};
use schemas::status::AgentStatus;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::commands::{AgentCommand, CreateAgent, UpdateAgent};
use crate::validate;
use crate::DomainError;

const AGENT: &str = "agent";

/// State an agent's decisions need. `status` is `None` until it is created.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub status: Option<AgentStatus>,
    pub name: String,
    pub agent_type: String,
    pub capabilities: Vec<String>,
    pub config: Value,
    pub max_concurrent_tasks: u32,
}

impl Aggregate for Agent {
    const TYPE: &'static str = schemas::subjects::AGENT;
    type Command = AgentCommand;
    type Event = AgentEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: AgentCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        let event = self.decide(command)?;
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: AgentEvent) {
        match event {
            AgentEvent::AgentCreated(e) => {
                self.status = Some(AgentStatus::Inactive);
                self.name = e.name;
                self.agent_type = e.agent_type;
                self.capabilities = e.capabilities;
                self.config = e.config;
                self.max_concurrent_tasks = e.max_concurrent_tasks;
            }
            AgentEvent::AgentUpdated(e) => {
                if let Some(v) = e.name {
                    self.name = v;
                }
                if let Some(v) = e.capabilities {
                    self.capabilities = v;
                }
                if let Some(v) = e.config {
                    self.config = v;
                }
                if let Some(v) = e.max_concurrent_tasks {
                    self.max_concurrent_tasks = v;
                }
            }
            AgentEvent::AgentActivated(_) | AgentEvent::AgentRecovered(_) => {
                self.status = Some(AgentStatus::Active)
            }
            AgentEvent::AgentDeactivated(_) => self.status = Some(AgentStatus::Inactive),
            AgentEvent::AgentMarkedUnhealthy(_) => self.status = Some(AgentStatus::Unhealthy),
            AgentEvent::AgentRetired(_) => self.status = Some(AgentStatus::Retired),
        }
    }
}

impl Agent {
    /// Decides the one event a command yields, or why it is refused.
    fn decide(&self, command: AgentCommand) -> Result<AgentEvent, DomainError> {
        use AgentStatus::*;
        let status = match (self.status, &command) {
            (None, AgentCommand::CreateAgent(c)) => return create(c),
            (None, _) => return Err(DomainError::NotFound(AGENT)),
            (Some(s), _) => s,
        };
        let refuse = |action: &'static str| {
            Err(DomainError::IllegalTransition {
                aggregate: "an agent",
                action,
                status: status.to_string(),
            })
        };
        match command {
            AgentCommand::CreateAgent(_) => Err(DomainError::AlreadyExists(AGENT)),
            AgentCommand::UpdateAgent(u) => match status {
                Retired => refuse("update"),
                _ => update(u),
            },
            AgentCommand::ActivateAgent => match status {
                Inactive => Ok(AgentEvent::AgentActivated(AgentActivated {})),
                _ => refuse("activate"),
            },
            AgentCommand::DeactivateAgent => match status {
                Active | Unhealthy => Ok(AgentEvent::AgentDeactivated(AgentDeactivated {})),
                _ => refuse("deactivate"),
            },
            AgentCommand::MarkAgentUnhealthy { reason } => match status {
                Active => Ok(AgentEvent::AgentMarkedUnhealthy(AgentMarkedUnhealthy {
                    reason: validate::text("reason", &reason, validate::MAX_TEXT)?,
                })),
                _ => refuse("mark unhealthy"),
            },
            AgentCommand::MarkAgentRecovered => match status {
                Unhealthy => Ok(AgentEvent::AgentRecovered(AgentRecovered {})),
                _ => refuse("mark recovered"),
            },
            AgentCommand::RetireAgent { reason } => match status {
                Retired => refuse("retire"),
                _ => Ok(AgentEvent::AgentRetired(AgentRetired {
                    reason: validate::optional_text("reason", reason)?,
                })),
            },
        }
    }
}

fn create(c: &CreateAgent) -> Result<AgentEvent, DomainError> {
    validate::json_object("config", &c.config)?;
    Ok(AgentEvent::AgentCreated(AgentCreated {
        name: validate::text("name", &c.name, validate::MAX_NAME)?,
        agent_type: validate::identifier("agent_type", &c.agent_type, validate::MAX_TYPE)?,
        capabilities: validate::labels("capabilities", &c.capabilities)?,
        config: c.config.clone(),
        max_concurrent_tasks: validate::concurrency(c.max_concurrent_tasks)?,
    }))
}

fn update(u: UpdateAgent) -> Result<AgentEvent, DomainError> {
    if u == UpdateAgent::default() {
        return Err(DomainError::invalid("body", "names no field to change"));
    }
    if let Some(config) = &u.config {
        validate::json_object("config", config)?;
    }
    Ok(AgentEvent::AgentUpdated(AgentUpdated {
        name: u
            .name
            .map(|n| validate::text("name", &n, validate::MAX_NAME))
            .transpose()?,
        capabilities: u
            .capabilities
            .map(|c| validate::labels("capabilities", &c))
            .transpose()?,
        config: u.config,
        max_concurrent_tasks: u
            .max_concurrent_tasks
            .map(validate::concurrency)
            .transpose()?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;
    use serde_json::json;

    type AgentTest = TestFramework<Agent>;

    fn create_cmd() -> CreateAgent {
        CreateAgent {
            name: "summariser".into(),
            agent_type: "llm".into(),
            capabilities: vec!["NLP".into(), "summarize".into()],
            config: json!({"model": "llama3"}),
            max_concurrent_tasks: 2,
        }
    }

    fn created() -> AgentEvent {
        AgentEvent::AgentCreated(AgentCreated {
            name: "summariser".into(),
            agent_type: "llm".into(),
            capabilities: vec!["nlp".into(), "summarize".into()],
            config: json!({"model": "llama3"}),
            max_concurrent_tasks: 2,
        })
    }

    fn activated() -> AgentEvent {
        AgentEvent::AgentActivated(AgentActivated {})
    }

    fn unhealthy() -> AgentEvent {
        AgentEvent::AgentMarkedUnhealthy(AgentMarkedUnhealthy {
            reason: "missed heartbeats".into(),
        })
    }

    fn retired() -> AgentEvent {
        AgentEvent::AgentRetired(AgentRetired { reason: None })
    }

    fn illegal(action: &'static str, status: &str) -> DomainError {
        DomainError::IllegalTransition {
            aggregate: "an agent",
            action,
            status: status.into(),
        }
    }

    #[test]
    fn create_normalises_capabilities() {
        AgentTest::with(())
            .given_no_previous_events()
            .when(AgentCommand::CreateAgent(create_cmd()))
            .then_expect_events(vec![created()]);
    }

    #[test]
    fn create_twice_is_refused() {
        AgentTest::with(())
            .given(vec![created()])
            .when(AgentCommand::CreateAgent(create_cmd()))
            .then_expect_error(DomainError::AlreadyExists("agent"));
    }

    #[test]
    fn create_refuses_bad_input() {
        let cases: Vec<(CreateAgent, &str)> = vec![
            (
                CreateAgent {
                    name: " ".into(),
                    ..create_cmd()
                },
                "name",
            ),
            (
                CreateAgent {
                    agent_type: "l l m".into(),
                    ..create_cmd()
                },
                "agent_type",
            ),
            (
                CreateAgent {
                    capabilities: vec!["".into()],
                    ..create_cmd()
                },
                "capabilities",
            ),
            (
                CreateAgent {
                    config: json!([1]),
                    ..create_cmd()
                },
                "config",
            ),
            (
                CreateAgent {
                    max_concurrent_tasks: 0,
                    ..create_cmd()
                },
                "max_concurrent_tasks",
            ),
        ];
        for (cmd, field) in cases {
            let err = AgentTest::with(())
                .given_no_previous_events()
                .when(AgentCommand::CreateAgent(cmd))
                .inspect_result()
                .unwrap_err();
            assert!(
                matches!(err, DomainError::Invalid { field: f, .. } if f == field),
                "{field}: {err:?}"
            );
        }
    }

    #[test]
    fn commands_on_a_missing_agent_are_not_found() {
        AgentTest::with(())
            .given_no_previous_events()
            .when(AgentCommand::ActivateAgent)
            .then_expect_error(DomainError::NotFound("agent"));
    }

    #[test]
    fn update_changes_only_given_fields() {
        AgentTest::with(())
            .given(vec![created()])
            .when(AgentCommand::UpdateAgent(UpdateAgent {
                max_concurrent_tasks: Some(4),
                capabilities: Some(vec!["OCR".into()]),
                ..Default::default()
            }))
            .then_expect_events(vec![AgentEvent::AgentUpdated(AgentUpdated {
                name: None,
                capabilities: Some(vec!["ocr".into()]),
                config: None,
                max_concurrent_tasks: Some(4),
            })]);
    }

    #[test]
    fn empty_update_and_update_of_retired_are_refused() {
        let err = AgentTest::with(())
            .given(vec![created()])
            .when(AgentCommand::UpdateAgent(UpdateAgent::default()))
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code(), "validation_failed");
        AgentTest::with(())
            .given(vec![created(), retired()])
            .when(AgentCommand::UpdateAgent(UpdateAgent {
                name: Some("x".into()),
                ..Default::default()
            }))
            .then_expect_error(illegal("update", "retired"));
    }

    #[test]
    fn activate_from_inactive_only() {
        AgentTest::with(())
            .given(vec![created()])
            .when(AgentCommand::ActivateAgent)
            .then_expect_events(vec![activated()]);
        AgentTest::with(())
            .given(vec![created(), activated()])
            .when(AgentCommand::ActivateAgent)
            .then_expect_error(illegal("activate", "active"));
        AgentTest::with(())
            .given(vec![created(), activated(), unhealthy()])
            .when(AgentCommand::ActivateAgent)
            .then_expect_error(illegal("activate", "unhealthy"));
    }

    #[test]
    fn deactivate_from_active_or_unhealthy() {
        AgentTest::with(())
            .given(vec![created(), activated()])
            .when(AgentCommand::DeactivateAgent)
            .then_expect_events(vec![AgentEvent::AgentDeactivated(AgentDeactivated {})]);
        AgentTest::with(())
            .given(vec![created(), activated(), unhealthy()])
            .when(AgentCommand::DeactivateAgent)
            .then_expect_events(vec![AgentEvent::AgentDeactivated(AgentDeactivated {})]);
        AgentTest::with(())
            .given(vec![created()])
            .when(AgentCommand::DeactivateAgent)
            .then_expect_error(illegal("deactivate", "inactive"));
    }

    #[test]
    fn unhealthy_only_from_active() {
        AgentTest::with(())
            .given(vec![created(), activated()])
            .when(AgentCommand::MarkAgentUnhealthy {
                reason: "missed heartbeats".into(),
            })
            .then_expect_events(vec![unhealthy()]);
        AgentTest::with(())
            .given(vec![created()])
            .when(AgentCommand::MarkAgentUnhealthy { reason: "x".into() })
            .then_expect_error(illegal("mark unhealthy", "inactive"));
        let err = AgentTest::with(())
            .given(vec![created(), activated()])
            .when(AgentCommand::MarkAgentUnhealthy { reason: "".into() })
            .inspect_result()
            .unwrap_err();
        assert_eq!(err.code(), "validation_failed");
    }

    #[test]
    fn recovered_only_from_unhealthy() {
        AgentTest::with(())
            .given(vec![created(), activated(), unhealthy()])
            .when(AgentCommand::MarkAgentRecovered)
            .then_expect_events(vec![AgentEvent::AgentRecovered(AgentRecovered {})]);
        AgentTest::with(())
            .given(vec![created(), activated()])
            .when(AgentCommand::MarkAgentRecovered)
            .then_expect_error(illegal("mark recovered", "active"));
    }

    #[test]
    fn retire_once() {
        AgentTest::with(())
            .given(vec![created(), activated()])
            .when(AgentCommand::RetireAgent {
                reason: Some("replaced".into()),
            })
            .then_expect_events(vec![AgentEvent::AgentRetired(AgentRetired {
                reason: Some("replaced".into()),
            })]);
        AgentTest::with(())
            .given(vec![created(), retired()])
            .when(AgentCommand::RetireAgent { reason: None })
            .then_expect_error(illegal("retire", "retired"));
        AgentTest::with(())
            .given(vec![created(), retired()])
            .when(AgentCommand::ActivateAgent)
            .then_expect_error(illegal("activate", "retired"));
    }
}
