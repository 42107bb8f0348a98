//! The SutazAI query service: the read-only HTTP API over the projections.
//!
//! Not built yet: the read side (projector runtime, Postgres read models, the
//! query API with OpenAPI and live updates) is tracked as its own issue. This
//! crate exists so that the workspace has its final shape.
#![forbid(unsafe_code)]
