//! HTTP and process plumbing shared by the three SutazAI binaries
//! (command-service, query-service, projectors). It earns its place by keeping
//! one definition of what every server must do alike: problem+json bodies,
//! request and correlation ids on every request and log line, structured
//! logs, and graceful shutdown on SIGTERM. It holds no domain logic.
//!
//! Layout:
//! - [`problem_response`]: an RFC 7807 body with its media type.
//! - [`timeout`]: the request time limit, answered with a problem.
//! - [`health`]: readiness checks (Postgres, NATS) and the answer.
//! - [`ids`]: the request/correlation id middleware and header rules.
//! - [`extract`]: extractors that reject with problem+json (`IdPath`).
//! - [`leader`]: single-active roles through Postgres advisory locks.
//! - [`trace_layer`]: the per-request span and response log line.
//! - [`telemetry`]: the global log subscriber.
//! - [`shutdown_signal`]: SIGTERM or Ctrl-C.
//! - [`per_connection`]: the router as `axum::serve` should get it.
//! - [`index_scans`]: Postgres sessions that read through an index wherever one applies.
//! - [`allocator`]: the binaries' allocator settings (the crate's one `unsafe` call).
#![deny(unsafe_code)]

pub mod allocator;
pub mod extract;
pub mod health;
pub mod ids;
pub mod leader;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use schemas::Problem;
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{DefaultOnResponse, MakeSpan, TraceLayer};

/// The router as `axum::serve` should get it: with its routes finished once.
///
/// Given a `Router` itself, `axum::serve` calls `Router::with_state` for every
/// connection it accepts (axum 0.8), which clones the route table and every
/// route's boxed service — memory each open connection keeps. A heap profile
/// of the query service overloaded at 1,000 commands/s (`heaptrack`, the
/// system allocator in place of mimalloc, 2026-11-28) put that second among
/// its peak consumers, after hyper's read buffers: 98 MB of route tables and
/// 17 MB of cloned services. `into_make_service` finishes the routes once and
/// hands each connection a clone of one shared router. Measured on a
/// standalone query service, twice each: 1,000 open idle connections cost
/// 20.6 MiB of anonymous memory before, 2.7 MiB after; 27.9 / 24.9 →
/// 15.1 / 16.1 MiB more once each has sent one `GET`.
pub fn per_connection(router: axum::Router) -> axum::routing::IntoMakeService<axum::Router> {
    router.into_make_service()
}

/// Sessions that price sequential scans out (`enable_seqscan = off`) and
/// never compile a statement to machine code (`jit = off`).
///
/// For workers whose every statement is written for an index (a key lookup,
/// a batch's keys, the outbox in id order) on tables that grow by thousands
/// of rows a second or churn like a queue: a statement is priced with the
/// statistics of the last `ANALYZE`, which autovacuum runs at most once a
/// minute per database. Until then a table that was small looks small, and a
/// batch's key lookup or the relay's delete scans it whole (measured in one
/// 35-second load test on a new database: 3,736 sequential scans of the
/// outbox, every page of its dead rows each time, 1,026 of `coord_tasks`
/// reading 3.8 million rows and 513 of `tasks` reading 2.5 million). Priced
/// out, a sequential scan is chosen only where no index applies.
///
/// Plans are left to Postgres here (`plan_cache_mode = auto`; the
/// projections add [`generic_plans`]): after five runs a
/// prepared statement keeps its generic plan where that costs no more than
/// planning per call (the batch start, the inserts, the checkpoints), and the
/// statements whose best plan depends on the batch (joins on `= ANY($1)`)
/// are still planned per call. These sessions used to force a plan per call
/// (`force_custom_plan`): in a 20-second run at 100 commands/s Postgres then
/// spent 2.9 s planning and 7.7 s executing, against 2.1 s and 6.5 s with
/// `auto` (`pg_stat_statements`, `track_planning` on). Forcing generic plans
/// instead cut planning to 0.4 s but made executing dearer (8.4 s): the
/// read model's `UPDATE … FROM unnest(…)` took 2.2 ms a call against 0.9 ms
/// planned per call.
///
/// JIT goes with it: a disabled plan node costs ten billion, so every
/// statement left with a sequential scan (a table with no usable index, such
/// as the coordinator's few agents) looked a hundred thousand times dearer
/// than `jit_above_cost` and was JIT-compiled on every call — measured:
/// 0.5 ms of LLVM per call of the coordinator's agent lookup, run after
/// every batch of events (1,600 ms in a 30-second run at 1,000 tasks/s) to
/// save nothing on a statement that reads a handful of rows.
pub fn index_scans(options: sqlx::postgres::PgConnectOptions) -> sqlx::postgres::PgConnectOptions {
    options.options([("enable_seqscan", "off"), ("jit", "off")])
}

/// Sessions that plan each prepared statement once (`plan_cache_mode =
/// force_generic_plan`), for workers whose statements are batch writes
/// bounded by their keys (`= ANY($1)` on the primary key, `unnest` of the
/// batch's arrays): the projections' batches.
///
/// Under `auto`, Postgres kept planning the read model's batch statements
/// on every call: their custom plans, which know each array's length, always
/// looked cheaper than the generic one. Measured with `pg_stat_statements`
/// (`track_planning` on) in `loadgen --parts visibility --rate 300
/// --visibility-secs 30`, 2026-11-27: the two forms of the task batch were
/// planned 3,294 times for 1,514 ms (0.31 and 0.84 ms a plan) against
/// 2,654 ms executing; forced generic, 10 ms planning and 2,380 ms
/// executing (0.50 and 1.06 ms a call against 0.59 and 1.35 ms). The
/// generic plans read through the keys since the batch `UPDATE` also
/// filters on `id = ANY($1)` (see `projectors::read_models`); before that,
/// forcing them made that `UPDATE` dearer (2.2 against 0.9 ms a call).
pub fn generic_plans(
    options: sqlx::postgres::PgConnectOptions,
) -> sqlx::postgres::PgConnectOptions {
    options.options([("plan_cache_mode", "force_generic_plan")])
}

/// Serialises a problem with its media type.
pub fn problem_response(problem: Problem) -> Response {
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(problem)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(schemas::problem::CONTENT_TYPE),
    );
    response
}

/// Middleware (with `from_fn_with_state(limit, ..)`): a request that takes
/// longer than `limit` is answered 503 `timeout`.
pub async fn timeout(
    axum::extract::State(limit): axum::extract::State<std::time::Duration>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => problem_response(Problem::new(
            503,
            "timeout",
            "Timed out",
            Some(format!("request took longer than {} s", limit.as_secs())),
        )),
    }
}

tokio::task_local! {
    /// The in-flight permit of the request the current task serves (see
    /// [`shed`]), until the request ends or gives it back.
    static IN_FLIGHT: std::cell::RefCell<Option<tokio::sync::OwnedSemaphorePermit>>;
}

/// Middleware (with `from_fn_with_state(permits, ..)`): at most as many
/// requests in flight as `permits` holds; one more is answered 503
/// `overloaded` with `Retry-After: 1` at once, instead of queueing without
/// bound (each waiting request holds memory, and a late answer helps nobody).
/// A request may give its permit back early with [`release_in_flight`].
pub async fn shed(
    axum::extract::State(permits): axum::extract::State<std::sync::Arc<tokio::sync::Semaphore>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match permits.try_acquire_owned() {
        Ok(permit) => {
            IN_FLIGHT
                .scope(std::cell::RefCell::new(Some(permit)), next.run(request))
                .await
        }
        Err(_) => {
            let mut response = problem_response(Problem::new(
                503,
                "overloaded",
                "Overloaded",
                Some("too many requests in flight; retry shortly".into()),
            ));
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
    }
}

/// Gives the calling request's in-flight permit (see [`shed`]) back, for a
/// request about to park until something else happens, holding little
/// meanwhile; whoever parks it bounds such requests itself. Returns whether
/// the request held one (not outside [`shed`], nor twice).
pub fn release_in_flight() -> bool {
    IN_FLIGHT
        .try_with(|permit| permit.borrow_mut().take().is_some())
        .unwrap_or(false)
}

/// Names each request's span with its method, path, request id and
/// correlation id, so every log line inside a request carries them.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, req: &axum::http::Request<B>) -> tracing::Span {
        let header = |name: &axum::http::HeaderName| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        };
        tracing::info_span!("request",
            method = %req.method(),
            path = %req.uri().path(),
            request_id = %header(&ids::REQUEST_ID),
            correlation_id = %header(&ids::CORRELATION_ID),
        )
    }
}

/// Request tracing: one span per request and one INFO line per response
/// (with its status). A 5xx gets no second, ERROR line: under overload every
/// shed request would add one.
pub fn trace_layer() -> TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    RequestSpan,
    (),
    DefaultOnResponse,
    (),
    (),
    (),
> {
    TraceLayer::new_for_http()
        .make_span_with(RequestSpan)
        .on_request(())
        .on_response(DefaultOnResponse::new().level(tracing::Level::INFO))
        .on_body_chunk(())
        .on_eos(())
        .on_failure(())
}

/// Structured logging, one line per event, as text or JSON.
pub mod telemetry {
    use tracing_subscriber::EnvFilter;

    /// Installs the global subscriber; a second call (e.g. in tests) is a no-op.
    pub fn init(format: &str) {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let _ = if format == "json" {
            builder.json().flatten_event(true).try_init()
        } else {
            builder.try_init()
        };
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
