//! SutazAI projectors: durable JetStream consumers that build the read models,
//! vector and graph projections, and the replay and audit tools.
//!
//! Not built yet: tracked as the read-side issue. This crate exists so that
//! the workspace has its final shape.
#![forbid(unsafe_code)]
