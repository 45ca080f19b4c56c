//! The import: every code Seam holds, read from its lists into the mirror, so a new
//! deployment does not start empty. `/devices/list` (devices that take access codes),
//! then for each device `/access_codes/list` and `/access_codes/unmanaged/list`;
//! every code goes through the mirror's one write path (`store::mirror::apply`, origin
//! `import`), so an older list never overwrites a newer fetch and a code that did not
//! change writes no history. Mirrored codes the lists no longer return are queued for a
//! re-fetch, which settles whether they still exist.
//!
//! Progress lives in `import_runs` / `import_devices`: a run cut short (a crash, a
//! shutdown, a failure) resumes where it stopped, without listing finished devices
//! again. One replica at a time runs it (`store::run_lock`).
//!
//! Per workspace: each configured workspace's devices and codes are listed with its
//! own credential, in runs of its own (`import_runs.workspace_key`: its workspace
//! id, or '' for the single-key setup while its workspace is unknown) under its own
//! run lock; the mirror questions (is it empty? which codes did no list return?) are
//! asked of that workspace's codes only. A workspace whose id is not known yet waits.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;
use sqlx::{Connection, PgPool};
use tokio_util::sync::CancellationToken;

use super::supervisor;
use crate::config::ImportSettings;
use crate::seam::client::{FetchedCode, Page, PageError, PageKind, SeamList};
use crate::seam::event::{CodeEndpoint, EventRef};
use crate::seam::workspaces::{JobScope, Workspace, Workspaces};
use crate::store::import::{self as progress, CodeCounts, Run, RunDevice, StartupImport};
use crate::store::mirror::{self, Applied, ChangeKind, Fetch, Observed, Origin};
use crate::store::run_lock::{self, RunLock};
use crate::telemetry::metrics::{ImportCode, ImportRefetch, ImportRun, KindLabel, ListLabels, Metrics, Outcome, Task};

/// Between checks while another replica runs the import.
const RECHECK: Duration = Duration::from_secs(60);
/// The longest pause before a failed import on start is resumed.
const MAX_RESUME_DELAY: Duration = Duration::from_secs(600);

/// How a list call that failed for a while is tried again within a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    /// Calls in all, the first included.
    pub attempts: u32,
    /// The pause after the first failure; doubled after each further one.
    pub first: Duration,
    /// The longest pause (a `Retry-After` is honoured up to this).
    pub max: Duration,
}

impl Default for Retry {
    /// 5 calls, 1 s doubling (about 15 s of trying), `Retry-After` up to a minute.
    fn default() -> Retry {
        Retry { attempts: 5, first: Duration::from_secs(1), max: Duration::from_secs(60) }
    }
}

/// What a run has done so far, for whoever watches (`seam-access-sync import`).
#[derive(Debug, Clone, PartialEq)]
pub enum Progress<'a> {
    /// A page of `/devices/list` recorded; `devices`: all the run has listed so far.
    DevicesListed { devices: i64, more: bool },
    /// A device's codes are in the mirror.
    DeviceDone { device_id: &'a str, done: i64, total: i64, codes: &'a CodeCounts, queued: usize },
}

type ProgressFn = Arc<dyn Fn(&Progress<'_>) + Send + Sync>;

#[derive(Clone)]
pub struct Import {
    pool: PgPool,
    workspaces: Workspaces,
    settings: ImportSettings,
    store_pins: bool,
    metrics: Arc<Metrics>,
    retry: Retry,
    progress: Option<ProgressFn>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RunOutcome {
    /// Another replica holds this workspace's import lock.
    Skipped,
    /// `run_workspace_if_needed`: no run to resume, and the workspace's mirror has codes or an
    /// import of it finished.
    NotNeeded,
    Completed(Report),
}

/// What one `run_workspace` did (a resumed run: only what it did after resuming).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub run_id: i64,
    /// It went on with a run cut short.
    pub resumed: bool,
    /// Devices whose codes this call listed.
    pub devices: usize,
    pub codes: CodeCounts,
    /// Re-fetches queued for codes their device's lists left out.
    pub queued_unlisted: usize,
    /// Re-fetches queued for codes on devices no longer listed.
    pub queued_device_unlisted: usize,
    /// Device code lists Seam refused (a 4xx): the device's other list was still read.
    pub lists_refused: usize,
    /// Seam calls made (failed ones included).
    pub calls: u32,
}

/// The workspace a run imports, and where its state is kept.
struct Target<'a> {
    workspace: &'a Workspace,
    scope: &'a JobScope,
}

impl Import {
    pub fn new(
        pool: PgPool,
        workspaces: Workspaces,
        settings: ImportSettings,
        store_pins: bool,
        metrics: Arc<Metrics>,
    ) -> Import {
        Import { pool, workspaces, settings, store_pins, metrics, retry: Retry::default(), progress: None }
    }

    /// The workspaces imported.
    pub fn workspaces(&self) -> &Workspaces {
        &self.workspaces
    }

    /// With another policy for list calls that fail for a while (tests fail fast).
    pub fn with_retry(mut self, retry: Retry) -> Import {
        self.retry = retry;
        self
    }

    /// Calls `watch` as the run goes.
    pub fn with_progress(mut self, watch: impl Fn(&Progress<'_>) + Send + Sync + 'static) -> Import {
        self.progress = Some(Arc::new(watch));
        self
    }

    /// For the `index`th workspace: goes on with its unfinished run, or starts a new
    /// one, unless another replica is running its import. A failure is recorded on
    /// the run (`last_error`) and the next call resumes from there. Fails when the
    /// workspace's id is not known yet (and it is not the only one).
    pub async fn run_workspace(&self, index: usize) -> anyhow::Result<RunOutcome> {
        self.run(index, false).await
    }

    /// As `run_workspace`, but only when a run of the workspace was cut short, or
    /// when its mirror holds none of its codes and no import of it has finished
    /// (asked holding the lock, so a replica that finished an import a moment ago is
    /// not followed by a second one).
    pub async fn run_workspace_if_needed(&self, index: usize) -> anyhow::Result<RunOutcome> {
        self.run(index, true).await
    }

    async fn run(&self, index: usize, only_if_needed: bool) -> anyhow::Result<RunOutcome> {
        let workspace = self.workspaces.all().get(index).ok_or_else(|| anyhow::anyhow!("no workspace {index}"))?;
        let scope = self
            .workspaces
            .scope(index)
            .ok_or_else(|| anyhow::anyhow!("{}: Seam has not said which workspace it is yet", workspace.label))?;
        let target = Target { workspace, scope: &scope };
        let lock_key = run_lock::keys::of_workspace(run_lock::keys::IMPORT, &scope.key);
        let Some(lock) = RunLock::try_acquire(&self.pool, lock_key).await? else {
            self.count_run(ImportRun::Skipped);
            return Ok(RunOutcome::Skipped);
        };
        let label = &scope.label;
        let prepared = async {
            if scope.adopts_legacy && progress::adopt_legacy_runs(&self.pool, &scope.key).await? > 0 {
                tracing::info!(workspace = %label, workspace_id = %scope.key, "import: this workspace takes over the import runs from before workspaces");
            }
            if !only_if_needed {
                return Ok(None);
            }
            Ok::<_, sqlx::Error>(match progress::startup_import(&self.pool, &scope).await? {
                StartupImport::None => Some(RunOutcome::NotNeeded),
                StartupImport::Resume => {
                    tracing::info!(workspace = %label, "import: resuming the run cut short");
                    None
                }
                StartupImport::Start => {
                    tracing::info!(workspace = %label, "import: the workspace's mirror is empty; importing every device's codes");
                    None
                }
            })
        };
        match prepared.await {
            Ok(None) => {}
            Ok(Some(outcome)) => {
                lock.release().await;
                return Ok(outcome);
            }
            Err(e) => {
                lock.release().await;
                return Err(e.into());
            }
        }
        let result = self.run_locked(&target).await;
        lock.release().await;
        match &result {
            Ok(_) => self.count_run(ImportRun::Completed),
            Err(_) => self.count_run(ImportRun::Failed),
        }
        result.map(RunOutcome::Completed)
    }

    async fn run_locked(&self, target: &Target<'_>) -> anyhow::Result<Report> {
        let (mut run, resumed) = progress::current_or_new_run(&self.pool, target.scope).await?;
        let mut report = Report { run_id: run.id, resumed, ..Report::default() };
        tracing::info!(workspace = %target.scope.label, run = run.id, resumed, "import: started");
        let result = self.import(target, &mut run, &mut report).await;
        if let Err(e) = &result {
            let _ = progress::record_failure(&self.pool, run.id, &format!("{e:#}")).await;
        }
        result.map(|()| report)
    }

    async fn import(&self, target: &Target<'_>, run: &mut Run, report: &mut Report) -> anyhow::Result<()> {
        if !run.devices_listed {
            self.list_devices(target, run, report).await?;
        }
        let pending = progress::pending_devices(&self.pool, run.id).await?;
        let total = progress::device_counts(&self.pool, run.id).await?.0;
        let already_done = total - pending.len() as i64;
        for (done, device) in (already_done + 1..).zip(&pending) {
            let (codes, queued) = self.import_device(target, run, device, report).await?;
            report.devices += 1;
            self.watch(Progress::DeviceDone { device_id: &device.device_id, done, total, codes: &codes, queued });
        }
        report.queued_device_unlisted = progress::finish_run(&self.pool, run, target.scope).await?;
        self.metrics
            .import_refetches
            .get_or_create(&KindLabel { kind: ImportRefetch::DeviceUnlisted })
            .inc_by(report.queued_device_unlisted as u64);
        tracing::info!(
            workspace = %target.scope.label,
            run = run.id,
            devices = report.devices,
            created = report.codes.created,
            changed = report.codes.changed,
            unchanged = report.codes.unchanged,
            stale = report.codes.stale,
            skipped = report.codes.skipped,
            queued = report.queued_unlisted + report.queued_device_unlisted,
            calls = report.calls,
            "import: finished"
        );
        Ok(())
    }

    /// Reads `/devices/list` from where the run got to, recording each page with
    /// the cursor of the next.
    async fn list_devices(&self, target: &Target<'_>, run: &mut Run, report: &mut Report) -> anyhow::Result<()> {
        let mut cursor = run.device_cursor.clone();
        let mut restarted = false;
        let limit = self.settings.page_limit;
        loop {
            let asked = cursor.clone();
            let seam = &target.workspace.client;
            let page =
                self.call(target, SeamList::Devices, report, || seam.devices_page(asked.as_deref(), limit).boxed());
            let page = match page.await {
                // A stored cursor from a run cut short may have expired: list again
                // from the start (devices recorded stay, done or not).
                Err(PageError::Rejected { status, message }) if cursor.is_some() && !restarted => {
                    tracing::warn!(run = run.id, status, %message, "import: Seam refused the stored device cursor; listing devices from the start");
                    run.devices_listing_started_at = progress::restart_device_listing(&self.pool, run.id).await?;
                    (cursor, restarted) = (None, true);
                    continue;
                }
                Err(e) => anyhow::bail!("/devices/list failed: {e}"),
                Ok(page) => page,
            };
            progress::record_devices_page(
                &self.pool,
                run.id,
                &page.items,
                page.skipped,
                page.next_cursor.as_deref(),
                page.calls,
            )
            .await?;
            let devices = progress::device_counts(&self.pool, run.id).await?.0;
            self.watch(Progress::DevicesListed { devices, more: page.next_cursor.is_some() });
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        run.devices_listed = true;
        Ok(())
    }

    /// Lists one device's managed and unmanaged codes, then in one transaction stores
    /// them, queues a re-fetch of the mirrored codes the lists left out, and marks the
    /// device done.
    async fn import_device(
        &self,
        target: &Target<'_>,
        run: &Run,
        device: &RunDevice,
        report: &mut Report,
    ) -> anyhow::Result<(CodeCounts, usize)> {
        // A device listed without its workspace is the workspace's it was listed in.
        let device = &RunDevice {
            workspace_id: device.workspace_id.clone().or_else(|| target.scope.workspace_id.clone()),
            ..device.clone()
        };
        let device_id = device.device_id.as_str();
        let mut pages: Vec<(CodeEndpoint, DateTime<Utc>, Vec<FetchedCode>)> = Vec::new();
        let mut listed_from: Option<DateTime<Utc>> = None;
        // The lists read to their last page: codes of their kind they left out are
        // queued for a re-fetch.
        let mut complete: Vec<bool> = Vec::new();
        let (mut calls, mut skipped) = (0, 0);
        'lists: for endpoint in [CodeEndpoint::Managed, CodeEndpoint::Unmanaged] {
            let list = SeamList::of_codes(endpoint);
            let (mut cursor, mut limit) = (None::<String>, self.settings.page_limit);
            loop {
                // What the answer is at least as fresh as, on the database's clock.
                let started_at = progress::now(&self.pool).await?;
                listed_from.get_or_insert(started_at);
                let asked = cursor.clone();
                let page = self
                    .call(target, list, report, || {
                        target.workspace.client.access_codes_page(endpoint, device_id, asked.as_deref(), limit).boxed()
                    })
                    .await;
                match page {
                    Ok(page) => {
                        calls += page.calls;
                        skipped += page.skipped;
                        limit = page.limit;
                        pages.push((endpoint, started_at, page.items));
                        match page.next_cursor {
                            Some(next) => cursor = Some(next),
                            None => {
                                complete.push(endpoint == CodeEndpoint::Managed);
                                break;
                            }
                        }
                    }
                    // Seam no longer knows the device: neither do its codes. Every code
                    // mirrored on it is queued, and its re-fetch says.
                    Err(PageError::NotFound { message }) => {
                        tracing::info!(%device_id, %message, "import: the device is gone; re-fetching its codes");
                        calls += 1;
                        pages.clear();
                        complete = vec![true, false];
                        break 'lists;
                    }
                    // Seam refuses this list for this device (one that keeps no
                    // unmanaged codes, say): what was read is kept, the other list goes
                    // on, and nothing is concluded from what this one did not return.
                    Err(PageError::Rejected { status, message }) => {
                        tracing::warn!(%device_id, %list, status, %message, "import: Seam refused a device's code list; going on without it");
                        calls += 1;
                        report.lists_refused += 1;
                        continue 'lists;
                    }
                    Err(e) => anyhow::bail!("{} for device {device_id} failed: {e}", list.path()),
                }
            }
        }
        let listed_from = listed_from.expect("a list call was made");
        let mut counts = CodeCounts { skipped: skipped as i32, ..CodeCounts::default() };
        let mut listed: Vec<String> = Vec::new();
        let mut tx = crate::store::begin(&self.pool).await?;
        for (endpoint, started_at, codes) in &pages {
            for fetched in codes {
                let code = &fetched.code;
                // Seam's fake lists every device's codes whatever the device_id: a code
                // of another device is imported with its own device.
                if code.device_id.as_deref().is_some_and(|other| other != device_id) {
                    continue;
                }
                listed.push(code.access_code_id.clone());
                let fetch = Fetch {
                    access_code_id: &code.access_code_id,
                    endpoint: *endpoint,
                    device_id: Some(device_id),
                    workspace_id: device.workspace_id.as_deref(),
                    connected_account_id: device.connected_account_id.as_deref(),
                    origin: Origin::Import,
                    trigger: EventRef::default(),
                    started_at: *started_at,
                };
                // A savepoint per code: a code Postgres refuses (a NUL character, say)
                // is left out, not the device.
                let mut savepoint = tx.begin().await?;
                match mirror::apply(&mut savepoint, &fetch, Observed::Found(fetched), self.store_pins).await {
                    Ok(applied) => {
                        savepoint.commit().await?;
                        match applied {
                            Applied::Stale => counts.stale += 1,
                            Applied::Stored { change: None, .. } => counts.unchanged += 1,
                            Applied::Stored { change: Some(ChangeKind::Created), .. } => counts.created += 1,
                            Applied::Stored { change: Some(_), .. } => counts.changed += 1,
                        }
                    }
                    Err(e) if crate::store::is_data_error(&e) => {
                        savepoint.rollback().await?;
                        tracing::warn!(%device_id, access_code_id = %code.access_code_id, error = %e, "import: a listed code cannot be stored; skipped");
                        counts.skipped += 1;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let queued = progress::queue_unlisted_codes(&mut tx, device, &listed, listed_from, &complete).await?;
        progress::finish_device(&mut tx, run.id, device_id, &counts, queued, calls).await?;
        tx.commit().await?;
        report.codes.created += counts.created;
        report.codes.changed += counts.changed;
        report.codes.unchanged += counts.unchanged;
        report.codes.stale += counts.stale;
        report.codes.skipped += counts.skipped;
        report.queued_unlisted += queued;
        self.count_codes(&counts, queued);
        tracing::debug!(%device_id, found = counts.found(), queued, "import: device done");
        Ok((counts, queued))
    }

    /// One page of `list`, tried again after transient failures (`Retry`), counted.
    /// Every call is paced by the client's shared budget.
    async fn call<'a, T>(
        &self,
        target: &Target<'_>,
        list: SeamList,
        report: &mut Report,
        mut ask: impl FnMut() -> BoxFuture<'a, Result<Page<T>, PageError>>,
    ) -> Result<Page<T>, PageError> {
        let mut attempt = 0;
        let mut pause = self.retry.first;
        loop {
            attempt += 1;
            let result = ask().await;
            let (outcome, calls) = match &result {
                Ok(page) => (PageKind::Ok, page.calls),
                Err(e) => (e.kind(), 1),
            };
            report.calls += calls;
            let counter = |outcome| self.metrics.import_seam_calls.get_or_create(&ListLabels { list, outcome });
            counter(outcome).inc();
            if calls > 1 {
                counter(PageKind::TooLarge).inc_by(u64::from(calls - 1));
            }
            match result {
                Ok(page) => {
                    target.workspace.key_status.accepted();
                    return Ok(page);
                }
                Err(PageError::KeyRejected { status, message }) => {
                    target.workspace.key_status.rejected(format!("HTTP {status}: {message}"));
                    return Err(PageError::KeyRejected { status, message });
                }
                Err(PageError::Transient { reason, retry_after, .. }) if attempt < self.retry.attempts => {
                    let wait = retry_after.unwrap_or(pause).min(self.retry.max);
                    tracing::warn!(%list, attempt, %reason, retry_in_ms = wait.as_millis() as u64, "import: a list call failed; trying again");
                    tokio::time::sleep(wait).await;
                    pause = pause.saturating_mul(2).min(self.retry.max);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn watch(&self, progress: Progress<'_>) {
        if let Some(watch) = &self.progress {
            watch(&progress);
        }
    }

    fn count_run(&self, outcome: ImportRun) {
        self.metrics.import_runs.get_or_create(&Outcome { outcome }).inc();
    }

    fn count_codes(&self, counts: &CodeCounts, queued: usize) {
        self.metrics.import_devices.inc();
        for (outcome, n) in [
            (ImportCode::Created, counts.created),
            (ImportCode::Changed, counts.changed),
            (ImportCode::Unchanged, counts.unchanged),
            (ImportCode::Stale, counts.stale),
            (ImportCode::Skipped, counts.skipped),
        ] {
            self.metrics.import_codes.get_or_create(&Outcome { outcome }).inc_by(n as u64);
        }
        self.metrics.import_refetches.get_or_create(&KindLabel { kind: ImportRefetch::Unlisted }).inc_by(queued as u64);
    }

    /// The import when the worker starts (`import.on_start`), for each workspace:
    /// resumes its run cut short, or imports everything when its mirror holds none of
    /// its codes and no import of it has finished. A failed run is resumed after a
    /// pause (5 s, doubling up to 10 min); while another replica runs a workspace's
    /// import, or a workspace's id is not known yet, it is checked again every
    /// minute. Workspaces done are not asked again. Then waits for shutdown (the
    /// supervisor restarts a task that ends early).
    pub async fn run_on_start(self, shutdown: CancellationToken) {
        shutdown.run_until_cancelled(self.import_on_start()).await;
        shutdown.cancelled().await;
    }

    async fn import_on_start(&self) {
        let mut pause = Duration::from_secs(5);
        let mut waiting: Vec<usize> = (0..self.workspaces.all().len()).collect();
        while !waiting.is_empty() {
            let mut failed = false;
            let mut still = Vec::new();
            for index in waiting {
                let label = &self.workspaces.all()[index].label;
                if self.workspaces.scope(index).is_none() {
                    tracing::debug!(workspace = %label, "import: the workspace is not known yet; asking again later");
                    still.push(index);
                    continue;
                }
                match supervisor::guard(Task::Import, &self.metrics, self.run_workspace_if_needed(index)).await {
                    Some(Ok(RunOutcome::Completed(_) | RunOutcome::NotNeeded)) => {}
                    Some(Ok(RunOutcome::Skipped)) => still.push(index),
                    Some(Err(e)) => {
                        tracing::warn!(
                            workspace = %label,
                            error = format!("{e:#}"),
                            resume_in_s = pause.as_secs(),
                            "import failed; it resumes where it stopped"
                        );
                        failed = true;
                        still.push(index);
                    }
                    None => {
                        failed = true;
                        still.push(index);
                    }
                }
            }
            waiting = still;
            if waiting.is_empty() {
                return;
            }
            let wait = if failed { pause } else { RECHECK };
            if failed {
                pause = pause.saturating_mul(2).min(MAX_RESUME_DELAY);
            }
            tokio::time::sleep(wait).await;
        }
    }
}
