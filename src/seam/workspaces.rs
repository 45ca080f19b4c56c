//! The workspaces the service serves: for each configured entry, a Seam client with
//! its credential, the workspace id (configured, or learnt from `/workspaces/get`),
//! and whether Seam accepts the credential. The worker routes each code to the
//! client of the code's workspace (`route`); the queue claims only codes some
//! workspace can fetch (`claim_filter`).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::config::{SeamSettings, WorkspaceEntry};
use crate::seam::SeamKeyStatus;
use crate::seam::breaker::Breaker;
use crate::seam::client::{SeamClient, WorkspaceError};
use crate::seam::credential::Credential;

/// Most workspaces given a metric label of their own.
pub const MAX_LABELLED: usize = 50;

/// One configured workspace.
pub struct Workspace {
    /// `name`, or where the entry came from (`SEAM_API_KEY`, `workspaces[2]`).
    pub label: String,
    configured_id: Option<String>,
    resolved_id: RwLock<Option<String>>,
    pub credential_kind: &'static str,
    pub client: SeamClient,
    pub key_status: SeamKeyStatus,
}

impl Workspace {
    /// The workspace id: configured, or resolved from Seam; `None` until known.
    pub fn id(&self) -> Option<String> {
        self.configured_id.clone().or_else(|| self.resolved_id.read().expect("workspace id lock").clone())
    }
}

/// Every configured workspace, shared by the jobs and the endpoint.
#[derive(Clone)]
pub struct Workspaces(Arc<Vec<Workspace>>);

/// Where a code of a workspace is fetched.
pub enum Route<'a> {
    Fetch(&'a Workspace),
    /// No configured workspace has this id yet, but one is still unresolved: wait.
    Pending,
    /// No configured workspace serves it: stored, never fetched, until one is added.
    Unroutable,
}

/// Which queued codes this process can fetch (`queue::claim_next`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClaimFilter {
    /// Every code (one credential, workspace not known yet: today's single-key setup).
    pub any: bool,
    /// Codes of these workspaces.
    pub workspace_ids: Vec<String>,
    /// Codes whose workspace nobody named (only with a single workspace).
    pub without_workspace: bool,
}

/// A workspace's share of the per-workspace jobs (catch-up, the import): where its
/// state is kept and which mirrored codes are its.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobScope {
    /// The key of its rows in `catch_up_state` and `import_runs`: its workspace id,
    /// or '' for the only configured workspace while its id is unknown (the
    /// single-key setup, and the rows from before workspaces).
    pub key: String,
    /// Its workspace id, when known.
    pub workspace_id: Option<String>,
    /// The entry's label, stored beside the state for `status`.
    pub label: String,
    /// The only configured workspace: mirrored codes naming no workspace are its.
    pub sole: bool,
    /// The first entry, its id known: it takes over the '' rows (the state of the
    /// jobs from before workspaces, which ran with the first credential).
    pub adopts_legacy: bool,
}

impl JobScope {
    /// The key rows of a workspace not known yet are kept under.
    pub const UNKNOWN: &'static str = "";
}

/// Every code, whatever its workspace (tests and tools with one credential).
pub static CLAIM_EVERYTHING: ClaimFilter =
    ClaimFilter { any: true, workspace_ids: Vec::new(), without_workspace: false };

/// Why the service must not start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StartRefusal {
    #[error("{label}: {error}")]
    Rejected { label: String, error: WorkspaceError },
    #[error("{label}: the credential belongs to workspace {resolved}, not the configured {configured}")]
    WrongWorkspace { label: String, configured: String, resolved: String },
    #[error("{first} and {second} both reach workspace {workspace_id}: configure each workspace once")]
    Duplicate { first: String, second: String, workspace_id: String },
}

/// The refusals that stop a start (exit code 2).
#[derive(Debug, Clone, PartialEq)]
pub struct StartRefused(pub Vec<StartRefusal>);

impl std::fmt::Display for StartRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reasons: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        write!(f, "refusing to start: {}", reasons.join("; "))
    }
}

impl std::error::Error for StartRefused {}

impl Workspaces {
    /// The breaker every workspace's client shares (None without workspaces).
    pub fn breaker(&self) -> Option<&Arc<Breaker>> {
        self.0.first().map(|workspace| workspace.client.breaker())
    }

    /// Clients for `entries`, sharing one pace of `per_second` calls (0: none).
    pub fn new(entries: &[WorkspaceEntry], seam: &SeamSettings, per_second: u32) -> anyhow::Result<Workspaces> {
        let mut workspaces = Vec::with_capacity(entries.len());
        let pace = SeamClient::new(seam)?.paced(per_second);
        for entry in entries {
            workspaces.push(Workspace {
                label: entry.label.clone(),
                configured_id: entry.workspace_id.clone(),
                resolved_id: RwLock::new(None),
                credential_kind: entry.credential.kind(),
                client: pace.with(&entry.credential, seam)?,
                key_status: SeamKeyStatus::default(),
            });
        }
        Ok(Workspaces(Arc::new(workspaces)))
    }

    /// One workspace served by `client`, its id unknown: the single-key setup, for
    /// tests and tools.
    pub fn single(client: SeamClient, key_status: SeamKeyStatus) -> Workspaces {
        Workspaces(Arc::new(vec![Workspace {
            label: "SEAM_API_KEY".into(),
            configured_id: None,
            resolved_id: RwLock::new(None),
            credential_kind: "api_key",
            client,
            key_status,
        }]))
    }

    pub fn all(&self) -> &[Workspace] {
        &self.0
    }

    /// The one workspace that may serve codes of unknown workspaces: the only one
    /// configured, while Seam has not said which workspace it is.
    fn sole_unresolved(&self) -> Option<&Workspace> {
        match self.0.as_slice() {
            [only] if only.id().is_none() => Some(only),
            _ => None,
        }
    }

    /// The workspace that fetches codes of `workspace_id`.
    pub fn route(&self, workspace_id: Option<&str>) -> Route<'_> {
        if let Some(only) = self.sole_unresolved() {
            return Route::Fetch(only);
        }
        match workspace_id {
            Some(id) => match self.0.iter().find(|w| w.id().as_deref() == Some(id)) {
                Some(workspace) => Route::Fetch(workspace),
                None if self.0.iter().any(|w| w.id().is_none()) => Route::Pending,
                None => Route::Unroutable,
            },
            None => match self.0.as_slice() {
                [only] => Route::Fetch(only),
                _ => Route::Unroutable,
            },
        }
    }

    /// Whether an event of `workspace_id` will ever be fetched as things stand.
    pub fn serves(&self, workspace_id: Option<&str>) -> bool {
        !matches!(self.route(workspace_id), Route::Unroutable)
    }

    /// The codes `route` can fetch now, for the queue's claim.
    pub fn claim_filter(&self) -> ClaimFilter {
        ClaimFilter {
            any: self.sole_unresolved().is_some(),
            workspace_ids: self.0.iter().filter_map(Workspace::id).collect(),
            without_workspace: self.0.len() == 1,
        }
    }

    /// The `workspace` label of a metric: the workspace's id (its entry's label while
    /// unknown), or `all` when more than `MAX_LABELLED` workspaces are configured (a
    /// label per workspace would then cost the scraper more than it tells).
    pub fn metric_label(&self, workspace: &Workspace) -> String {
        if self.0.len() > MAX_LABELLED {
            "all".to_owned()
        } else {
            workspace.id().unwrap_or_else(|| workspace.label.clone())
        }
    }

    /// Where the `index`th workspace's catch-up and import keep their state, or
    /// `None` while its id is unknown and it is not the only one (its jobs wait: so
    /// do its codes).
    pub fn scope(&self, index: usize) -> Option<JobScope> {
        let workspace = self.0.get(index)?;
        let sole = self.0.len() == 1;
        let workspace_id = workspace.id();
        let key = match (&workspace_id, sole) {
            (Some(id), _) => id.clone(),
            (None, true) => JobScope::UNKNOWN.to_owned(),
            (None, false) => return None,
        };
        Some(JobScope {
            key,
            adopts_legacy: index == 0 && workspace_id.is_some(),
            workspace_id,
            label: workspace.label.clone(),
            sole,
        })
    }

    /// The workspace of the `index`th entry, if known (webhook secrets are scoped
    /// by entry).
    pub fn id_of(&self, index: usize) -> Option<String> {
        self.0.get(index).and_then(Workspace::id)
    }

    /// Asks Seam which workspace each unresolved credential reaches, once each.
    /// Returns the refusals that must stop a start (a rejected credential, a
    /// credential of another workspace than configured, two entries of one
    /// workspace) and how many are still unknown (Seam unreachable or failing).
    pub async fn resolve(&self) -> (Vec<StartRefusal>, usize) {
        let mut refusals = Vec::new();
        let mut unknown = 0;
        for workspace in self.0.iter() {
            if workspace.resolved_id.read().expect("workspace id lock").is_some() {
                continue;
            }
            match workspace.client.get_workspace().await {
                Ok(resolved) => {
                    workspace.key_status.accepted();
                    if let Some(configured) = workspace.configured_id.as_ref().filter(|c| **c != resolved) {
                        refusals.push(StartRefusal::WrongWorkspace {
                            label: workspace.label.clone(),
                            configured: configured.clone(),
                            resolved,
                        });
                        continue;
                    }
                    *workspace.resolved_id.write().expect("workspace id lock") = Some(resolved);
                }
                Err(error @ WorkspaceError::Rejected { .. }) => {
                    workspace.key_status.rejected(error.to_string());
                    refusals.push(StartRefusal::Rejected { label: workspace.label.clone(), error });
                }
                Err(WorkspaceError::Unavailable(reason)) => {
                    tracing::warn!(workspace = %workspace.label, %reason, "cannot ask Seam which workspace this credential reaches yet; its codes wait in the queue");
                    unknown += 1;
                }
            }
        }
        for (i, first) in self.0.iter().enumerate() {
            for second in &self.0[i + 1..] {
                if let (Some(a), Some(b)) = (first.id(), second.id())
                    && a == b
                {
                    refusals.push(StartRefusal::Duplicate {
                        first: first.label.clone(),
                        second: second.label.clone(),
                        workspace_id: a,
                    });
                }
            }
        }
        (refusals, unknown)
    }

    /// Resolves in the background every `every` until each workspace is known (then
    /// idles until `stop`: a supervised task); a refusal found now is logged and
    /// shown on `/readyz` (the process is already serving).
    pub async fn resolve_until_known(self, every: Duration, stop: tokio_util::sync::CancellationToken) {
        loop {
            let (refusals, unknown) = self.resolve().await;
            for refusal in &refusals {
                tracing::error!(%refusal, "a configured workspace cannot be served");
            }
            if unknown == 0 {
                stop.cancelled().await;
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    /// Each workspace: its label, id (if known) and why Seam rejects its
    /// credential (if it does), for `/readyz` and the logs.
    pub fn key_states(&self) -> Vec<(String, Option<String>, Option<String>)> {
        self.0.iter().map(|w| (w.label.clone(), w.id(), w.key_status.rejection())).collect()
    }
}

impl SeamClient {
    /// This client's transport and pace with another credential.
    fn with(&self, credential: &Credential, seam: &SeamSettings) -> anyhow::Result<SeamClient> {
        Ok(SeamClient::with_credential(seam, credential)?.sharing_pace_of(self))
    }
}
