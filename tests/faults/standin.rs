//! The Seam stand-in: `GET /access_codes/get` answers each code's current truth, as the
//! test set it, with switchable faults (connection refused, 500s, slow answers). It
//! counts calls, in total and per code, and the most requests it ever had in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What Seam holds for a code right now.
#[derive(Debug, Clone, PartialEq)]
pub struct Truth {
    pub status: &'static str,
    pub warnings: Vec<Value>,
}

/// How the stand-in answers while it listens.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Mode {
    #[default]
    Normal,
    /// Every call answers 500.
    Error500,
    /// Every call waits this long, then answers normally.
    Slow(Duration),
}

#[derive(Default)]
struct Shared {
    truth: Mutex<HashMap<String, Truth>>,
    mode: Mutex<Mode>,
    calls: AtomicU64,
    answered_500: AtomicU64,
    per_code: Mutex<HashMap<String, u64>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// The stand-in's state, shared with whoever sets truths or reads counts.
#[derive(Clone, Default)]
pub struct SeamHandle(Arc<Shared>);

impl SeamHandle {
    pub fn set_truth(&self, code: &str, truth: Truth) {
        self.0.truth.lock().unwrap().insert(code.to_owned(), truth);
    }
    pub fn truths(&self) -> HashMap<String, Truth> {
        self.0.truth.lock().unwrap().clone()
    }
    pub fn set_mode(&self, mode: Mode) {
        *self.0.mode.lock().unwrap() = mode;
    }
    /// Every `GET /access_codes/get` that reached the stand-in.
    pub fn calls(&self) -> u64 {
        self.0.calls.load(Ordering::SeqCst)
    }
    pub fn answered_500(&self) -> u64 {
        self.0.answered_500.load(Ordering::SeqCst)
    }
    pub fn calls_per_code(&self) -> HashMap<String, u64> {
        self.0.per_code.lock().unwrap().clone()
    }
    pub fn in_flight(&self) -> usize {
        self.0.in_flight.load(Ordering::SeqCst)
    }
    pub fn max_in_flight(&self) -> usize {
        self.0.max_in_flight.load(Ordering::SeqCst)
    }
    pub fn reset_max_in_flight(&self) {
        self.0.max_in_flight.store(self.in_flight(), Ordering::SeqCst);
    }
}

/// Counts a request in flight until dropped (also when the client goes away and the
/// handler is dropped mid-way).
struct InFlight(Arc<Shared>);

impl InFlight {
    fn enter(shared: &Arc<Shared>) -> InFlight {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(shared.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn get_code(State(shared): State<Arc<Shared>>, Query(query): Query<HashMap<String, String>>) -> Response {
    let _in_flight = InFlight::enter(&shared);
    let id = query.get("access_code_id").cloned().unwrap_or_default();
    shared.calls.fetch_add(1, Ordering::SeqCst);
    *shared.per_code.lock().unwrap().entry(id.clone()).or_default() += 1;
    let mode = *shared.mode.lock().unwrap();
    match mode {
        Mode::Error500 => {
            shared.answered_500.fetch_add(1, Ordering::SeqCst);
            let body = json!({"error": {"type": "internal_server_error", "message": "stand-in outage"}, "ok": false});
            return (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response();
        }
        Mode::Slow(pause) => tokio::time::sleep(pause).await,
        Mode::Normal => {}
    }
    // The truth as it is when the answer leaves, like Seam's.
    let truth = shared.truth.lock().unwrap().get(&id).cloned();
    match truth {
        Some(truth) => Json(json!({
            "access_code": {
                "access_code_id": id,
                "device_id": device_for(&id),
                "workspace_id": WORKSPACE_ID,
                "name": "Guest stay",
                "type": "ongoing",
                "code": "8172",
                "is_managed": true,
                "status": truth.status,
                "warnings": truth.warnings,
                "errors": [],
                "created_at": "2026-11-20T10:00:00.000Z"
            },
            "ok": true
        }))
        .into_response(),
        None => {
            let body =
                json!({"error": {"type": "access_code_not_found", "message": "Access code not found"}, "ok": false});
            (StatusCode::NOT_FOUND, Json(body)).into_response()
        }
    }
}

async fn list_events() -> Json<Value> {
    Json(json!({"events": [], "ok": true}))
}

pub const WORKSPACE_ID: &str = "0f4a4a4e-2a0b-4d8e-9d6c-2a6f1b9c3d10";

/// A stable device per code (a few codes share each device).
pub fn device_for(code: &str) -> String {
    let n = code.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b))) % 16;
    format!("6f0e3c2a-1b7d-4e59-8a3f-9c2d1e0b4a{n:02x}")
}

/// The stand-in server; listens until `go_down`, again after `come_up` on the same port.
pub struct StandIn {
    handle: SeamHandle,
    port: u16,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl StandIn {
    pub async fn start() -> anyhow::Result<StandIn> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let handle = SeamHandle::default();
        let server = Some(serve(listener, handle.clone()));
        Ok(StandIn { handle, port, server })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn handle(&self) -> SeamHandle {
        self.handle.clone()
    }

    pub fn is_up(&self) -> bool {
        self.server.is_some()
    }

    /// Stops listening and closes every connection (answers in flight are finished
    /// first): from now on, connections are refused.
    pub async fn go_down(&mut self) -> anyhow::Result<()> {
        if let Some((stop, task)) = self.server.take() {
            let _ = stop.send(());
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .map_err(|_| anyhow::anyhow!("the Seam stand-in did not close its connections within 30 s"))??;
        }
        Ok(())
    }

    /// Listens on the same port again.
    pub async fn come_up(&mut self) -> anyhow::Result<()> {
        if self.server.is_some() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    anyhow::bail!("cannot listen on the Seam stand-in's port {} again: {e}", self.port)
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        self.server = Some(serve(listener, self.handle.clone()));
        Ok(())
    }
}

impl std::ops::Deref for StandIn {
    type Target = SeamHandle;
    fn deref(&self) -> &SeamHandle {
        &self.handle
    }
}

fn serve(listener: TcpListener, handle: SeamHandle) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let app = Router::new()
        .route("/access_codes/get", get(get_code))
        .route("/events/list", post(list_events))
        .with_state(handle.0);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
    });
    (stop, task)
}
