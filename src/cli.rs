//! The command line: `serve` (default) and the operator commands.

use std::process::ExitCode;

use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::Application;
use crate::config::Settings;
use crate::jobs::backup::{BackupPuller, PullResult, PullStep};
use crate::jobs::import::{Import, Progress, RunOutcome};
use crate::seam::client::shortened_keeping_request_id;
use crate::seam::event::CodeEndpoint;
use crate::seam::workspaces::{ClaimFilter, StartRefusal, StartRefused, Workspaces};
use crate::store;
use crate::store::admin::{self, CatchUpRun, CatchUpState, WorkspaceJobs};
use crate::store::backup as backup_store;
use crate::store::import as import_progress;
use crate::telemetry::metrics::Metrics;

/// Receives Seam access_code.* webhooks and mirrors each code's status, warnings
/// and errors in Postgres. Settings: config/*.toml and the environment (README).
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook endpoint and/or the worker, per server.run_mode (the default).
    Serve,
    /// Create the database if needed, apply pending migrations and exit.
    Migrate,
    /// Queue a re-fetch of these access codes now, as if an event had arrived.
    Refetch(RefetchArgs),
    /// Re-fetch every code the mirror holds (not deleted): after a restore or a long
    /// outage. Queues them at --rate per second; the running workers fetch them.
    Reconcile {
        /// Every non-deleted code (required: a full re-sync is deliberate).
        #[arg(long, required = true)]
        all: bool,
        /// Codes queued per second.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
        rate: u32,
        /// Run the import of every workspace first (as `import` does), so codes the
        /// mirror never had are in it too.
        #[arg(long)]
        import: bool,
    },
    /// Import every device's codes from Seam's lists into the mirror, workspace by
    /// workspace, printing progress; resumes an import cut short. Needs SEAM_API_KEY
    /// or [[workspaces]].
    Import {
        /// Only this workspace (its workspace id or its name).
        #[arg(long, value_name = "WORKSPACE")]
        workspace: Option<String>,
    },
    /// List or redrive re-fetches that were given up on.
    #[command(subcommand)]
    DeadLetters(DeadLetterCommand),
    /// Exit 0 when the running service answers /readyz with 200 (for container
    /// healthchecks; the image has no curl).
    Healthcheck {
        /// Where the service listens; default: server.listen_addr (0.0.0.0 → 127.0.0.1).
        #[arg(long)]
        url: Option<String>,
    },
    /// Pull a backup access code for one time-bound code now (once: a code pulled
    /// for before shows its backup again), and print the backup's id (and its PIN
    /// with store_pins = true). Needs the code's workspace credential.
    PullBackup {
        /// The Seam access code to pull a backup for.
        #[arg(value_name = "ACCESS_CODE_ID")]
        access_code_id: String,
    },
    /// Show the queue, dead letters, the last webhook seen, and each workspace's
    /// catch-up and import.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct RefetchArgs {
    /// Seam access code ids.
    #[arg(required = true, value_name = "ACCESS_CODE_ID")]
    pub access_code_ids: Vec<String>,
    /// The codes are unmanaged (fetched from /access_codes/unmanaged/get).
    #[arg(long)]
    pub unmanaged: bool,
}

#[derive(Debug, Subcommand)]
pub enum DeadLetterCommand {
    /// List dead letters with their last error.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Put dead letters back in the queue, due now.
    Redrive {
        /// The access code ids to redrive.
        #[arg(value_name = "ACCESS_CODE_ID", required_unless_present = "all", conflicts_with = "all")]
        access_code_ids: Vec<String>,
        /// Redrive every dead letter.
        #[arg(long)]
        all: bool,
    },
}

/// What a command ends with: success, a failure to report (exit 1).
type Outcome = anyhow::Result<()>;

pub async fn run(command: Command, settings: Settings) -> ExitCode {
    let serving = matches!(command, Command::Serve);
    let result = match command {
        Command::Serve => serve(settings).await,
        Command::Migrate => migrate(settings).await,
        Command::Refetch(args) => refetch(settings, args).await,
        Command::DeadLetters(DeadLetterCommand::List { json }) => list_dead_letters(settings, json).await,
        Command::DeadLetters(DeadLetterCommand::Redrive { access_code_ids, all }) => {
            redrive(settings, (!all).then_some(access_code_ids)).await
        }
        Command::Status { json } => status(settings, json).await,
        Command::Reconcile { all: _, rate, import: false } => reconcile(settings, rate).await,
        Command::Reconcile { all: _, rate, import: true } => match import(&settings, None).await {
            Ok(()) => reconcile(settings, rate).await,
            Err(e) => Err(e),
        },
        Command::Import { workspace } => import(&settings, workspace.as_deref()).await,
        Command::Healthcheck { url } => healthcheck(settings, url).await,
        Command::PullBackup { access_code_id } => pull_backup(settings, &access_code_id).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if serving {
                tracing::error!(error = format!("{e:#}"), "stopped");
            }
            eprintln!("seam-access-sync: {e:#}");
            // Settings Seam refuses (a rejected credential, a workspace configured
            // twice) are bad settings, like those refused before the start.
            if e.downcast_ref::<StartRefused>().is_some() { ExitCode::from(2) } else { ExitCode::FAILURE }
        }
    }
}

async fn serve(settings: Settings) -> Outcome {
    let app = Application::build(settings).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    app.run_until_stopped(shutdown).await
}

async fn migrate(settings: Settings) -> Outcome {
    let pool = store::connect(&settings.database).await?;
    store::migrate(&pool).await?;
    println!("migrations applied");
    Ok(())
}

/// Operator commands work on an existing, migrated database and never create one.
async fn existing_database(settings: &Settings) -> anyhow::Result<sqlx::PgPool> {
    let pool = store::pool_options(&settings.database)
        .connect_with(settings.database.connect_options()?)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to the database: {e}"))?;
    let pending = store::pending_migrations(&pool).await?;
    anyhow::ensure!(pending == 0, "{pending} migration(s) not applied: run `seam-access-sync migrate` first");
    Ok(pool)
}

async fn refetch(settings: Settings, args: RefetchArgs) -> Outcome {
    if let Some(bad) = args.access_code_ids.iter().find(|id| id.trim().is_empty() || id.len() > 255) {
        anyhow::bail!("not an access code id: {bad:?}");
    }
    let pool = existing_database(&settings).await?;
    let endpoint = if args.unmanaged { CodeEndpoint::Unmanaged } else { CodeEndpoint::Managed };
    admin::refetch(&pool, &args.access_code_ids, endpoint).await?;
    println!("queued {} re-fetch(es)", args.access_code_ids.len());
    Ok(())
}

async fn reconcile(settings: Settings, rate: u32) -> Outcome {
    let pool = existing_database(&settings).await?;
    let codes = admin::existing_codes(&pool).await?;
    let total = codes.len();
    let mut queued = 0;
    for (i, batch) in codes.chunks(rate as usize).enumerate() {
        if i > 0 {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        admin::refetch_each(&pool, batch).await?;
        queued += batch.len();
        println!("queued {queued}/{total}");
    }
    println!("queued {total} code(s) for a re-fetch; the running workers fetch them (watch `seam-access-sync status`)");
    Ok(())
}

/// How `status` and `import` name a workspace: its label and id.
fn workspace_name(label: Option<&str>, key: &str) -> String {
    match (label, key) {
        (Some(label), "") => format!("{label} (workspace not known yet)"),
        (None, "") => "(workspace not known yet)".to_owned(),
        (Some(label), id) if label != id => format!("{label} ({id})"),
        (_, id) => id.to_owned(),
    }
}

/// Runs the import in the foreground, workspace by workspace (or the one asked
/// for), a line per device. One workspace's failure leaves the others to run; the
/// command fails if any did.
async fn import(settings: &Settings, only: Option<&str>) -> Outcome {
    settings.check_seam_key()?;
    let pool = existing_database(settings).await?;
    let entries = settings.workspace_entries()?;
    let workspaces = Workspaces::new(&entries, &settings.seam, settings.worker.max_requests_per_second)?;
    // Which workspace each credential reaches. A rejected credential fails its own
    // workspace's import below; a credential of another workspace than configured,
    // or two entries of one workspace, are bad settings.
    let (refusals, _) = workspaces.resolve().await;
    let refusals: Vec<StartRefusal> =
        refusals.into_iter().filter(|r| !matches!(r, StartRefusal::Rejected { .. })).collect();
    if !refusals.is_empty() {
        return Err(StartRefused(refusals).into());
    }
    let selected: Vec<usize> = match only {
        None => (0..workspaces.all().len()).collect(),
        Some(wanted) => {
            let found = workspaces
                .all()
                .iter()
                .position(|w| w.id().as_deref() == Some(wanted) || w.label == wanted)
                .ok_or_else(|| anyhow::anyhow!("no configured workspace has the id or name {wanted:?}"))?;
            vec![found]
        }
    };
    let metrics = Arc::new(Metrics::new());
    let import = Import::new(pool, workspaces.clone(), settings.import.clone(), settings.store_pins, metrics)
        .with_progress(|progress| match progress {
            Progress::DevicesListed { devices, more } => {
                println!("listed {devices} device(s) that take access codes{}", if *more { " so far" } else { "" })
            }
            Progress::DeviceDone { device_id, done, total, codes, queued } => println!(
                "device {done}/{total} {device_id}: {} code(s) ({} created, {} changed, {} unchanged, {} stale, {} skipped), {queued} re-fetch(es) queued",
                codes.found(),
                codes.created,
                codes.changed,
                codes.unchanged,
                codes.stale,
                codes.skipped,
            ),
        });
    let several = workspaces.all().len() > 1;
    let mut failed = Vec::new();
    for index in selected {
        let workspace = &workspaces.all()[index];
        let name = workspace_name(Some(&workspace.label), &workspace.id().unwrap_or_default());
        if several {
            println!("workspace {name}");
        }
        if workspaces.scope(index).is_none() {
            let why = workspace.key_status.rejection().map_or_else(
                || "Seam did not say which workspace its credential reaches (try again)".to_owned(),
                |rejection| format!("Seam rejected its credential: {rejection}"),
            );
            eprintln!("seam-access-sync: the import of {name} did not run: {why}");
            failed.push(name);
            continue;
        }
        match import.run_workspace(index).await {
            Err(e) => {
                eprintln!("seam-access-sync: the import of {name} failed: {e:#}");
                failed.push(name);
            }
            Ok(RunOutcome::Skipped) => {
                eprintln!(
                    "seam-access-sync: another process is running the import of {name}; `seam-access-sync status` shows its progress"
                );
                failed.push(name);
            }
            Ok(RunOutcome::NotNeeded) => println!("nothing to import"),
            Ok(RunOutcome::Completed(report)) => {
                let c = &report.codes;
                println!(
                    "import finished (run {}{}): {} device(s), {} code(s): {} created, {} changed, {} unchanged, {} stale, {} skipped; {} re-fetch(es) queued for codes Seam no longer lists; {} Seam call(s)",
                    report.run_id,
                    if report.resumed { ", resumed" } else { "" },
                    report.devices,
                    c.found(),
                    c.created,
                    c.changed,
                    c.unchanged,
                    c.stale,
                    c.skipped,
                    report.queued_unlisted + report.queued_device_unlisted,
                    report.calls,
                );
                if report.lists_refused > 0 {
                    println!(
                        "{} device code list(s) refused by Seam were left out (the log says which)",
                        report.lists_refused
                    );
                }
            }
        }
    }
    anyhow::ensure!(failed.is_empty(), "the import did not finish for {}", failed.join(", "));
    Ok(())
}

async fn list_dead_letters(settings: Settings, json: bool) -> Outcome {
    let pool = existing_database(&settings).await?;
    let letters = admin::dead_letters(&pool).await?;
    if json {
        let rows: Vec<_> = letters
            .iter()
            .map(|d| {
                serde_json::json!({
                    "access_code_id": d.access_code_id, "endpoint": d.endpoint, "attempts": d.attempts,
                    "dead_lettered_at": d.dead_lettered_at, "last_error": d.last_error,
                    "last_event_type": d.last_event_type,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if letters.is_empty() {
        println!("no dead letters");
        return Ok(());
    }
    println!("{:<40} {:>8}  {:<20}  last error", "access_code_id", "attempts", "dead since");
    for d in &letters {
        // Cut to a line, but the request id to quote to Seam support stays whole.
        let error = shortened_keeping_request_id(d.last_error.as_deref().unwrap_or(""), 100);
        println!(
            "{:<40} {:>8}  {:<20}  {}",
            d.access_code_id,
            d.attempts,
            d.dead_lettered_at.format("%Y-%m-%d %H:%M:%S"),
            error
        );
    }
    println!("{} dead letter(s); redrive with `seam-access-sync dead-letters redrive <id>|--all`", letters.len());
    Ok(())
}

async fn redrive(settings: Settings, ids: Option<Vec<String>>) -> Outcome {
    let pool = existing_database(&settings).await?;
    let redriven = admin::redrive(&pool, ids.as_deref()).await?;
    println!("redrove {} dead letter(s)", redriven.len());
    if let Some(asked) = ids {
        let missing: Vec<&String> = asked.iter().filter(|id| !redriven.contains(id)).collect();
        anyhow::ensure!(missing.is_empty(), "not dead letters: {missing:?}");
    }
    Ok(())
}

/// Queued re-fetches no configured workspace can serve, by workspace: the ids known
/// are the configured ones and those catch-up has run under (resolved by a running
/// service). `None` when this environment configures no workspace (it cannot say).
async fn unroutable_refetches(
    settings: &Settings,
    pool: &sqlx::PgPool,
    jobs: &[WorkspaceJobs],
) -> anyhow::Result<Option<Vec<(Option<String>, i64)>>> {
    let entries = settings.workspace_entries().unwrap_or_default();
    if entries.is_empty() {
        return Ok(None);
    }
    let mut known: Vec<String> = entries.iter().filter_map(|e| e.workspace_id.clone()).collect();
    known.extend(jobs.iter().filter(|w| !w.key.is_empty()).map(|w| w.key.clone()));
    let sole = entries.len() == 1;
    let filter = ClaimFilter { any: sole && known.is_empty(), workspace_ids: known, without_workspace: sole };
    Ok(Some(store::queue::unroutable(pool, &filter).await?))
}

async fn status(settings: Settings, json: bool) -> Outcome {
    let pool = existing_database(&settings).await?;
    let s = admin::queue_status(&pool).await?;
    let workspaces = admin::workspaces_jobs(&pool).await?;
    let unroutable = unroutable_refetches(&settings, &pool, &workspaces).await?;
    let backups = backup_store::status(&pool, settings.backup.pull_after_seconds).await?;
    if json {
        let rows: Vec<serde_json::Value> = workspaces
            .iter()
            .map(|w| {
                let catch_up = w.catch_up.as_ref().map(|c| {
                    serde_json::json!({
                        "high_water_mark": c.high_water_mark, "last_success_at": c.last_success_at,
                        "last_run_at": c.last_run_at, "last_outcome": c.last_outcome,
                        "last_events_found": c.last_events_found, "last_events_new": c.last_events_new,
                        "last_error": c.last_error,
                    })
                });
                let import = w.import.as_ref().map(|r| {
                    serde_json::json!({
                        "run": r.id, "state": if r.finished_at.is_some() { "finished" } else { "unfinished" },
                        "started_at": r.started_at, "finished_at": r.finished_at, "devices_listed": r.devices_listed,
                        "devices_total": r.devices_total, "devices_done": r.devices_done,
                        "devices_skipped": r.devices_skipped, "codes_imported": r.codes_imported(),
                        "codes_created": r.codes_created, "codes_changed": r.codes_changed,
                        "codes_unchanged": r.codes_unchanged, "codes_stale": r.codes_stale,
                        "codes_skipped": r.codes_skipped, "codes_queued": r.codes_queued, "seam_calls": r.seam_calls,
                        "last_error": r.last_error,
                    })
                });
                serde_json::json!({
                    "workspace_id": (!w.key.is_empty()).then_some(&w.key), "label": w.label,
                    "catch_up": catch_up, "import": import,
                })
            })
            .collect();
        let body = serde_json::json!({
            "pending": s.pending, "in_flight": s.in_flight, "due": s.due,
            "oldest_pending_age_seconds": s.oldest_pending_age_seconds, "dead_letters": s.dead_letters,
            "last_webhook_at": s.last_webhook_at, "mirrored_codes": s.mirrored_codes,
            "workspaces": rows,
            "unroutable": unroutable.as_ref().map(|by_workspace| by_workspace.iter()
                .map(|(w, n)| serde_json::json!({ "workspace_id": w, "refetches": n })).collect::<Vec<_>>()),
            "backup_pulls": backups,
        });
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let seconds = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} s"));
    println!("pending re-fetches  {} ({} in flight, {} due now)", s.pending, s.in_flight, s.due);
    println!("oldest pending      {}", seconds(s.oldest_pending_age_seconds));
    println!("dead letters        {}", s.dead_letters);
    match &unroutable {
        None => println!("unroutable          - (no workspace configured in this environment)"),
        Some(by_workspace) if by_workspace.is_empty() => println!("unroutable          0"),
        Some(by_workspace) => {
            let named: Vec<String> = by_workspace
                .iter()
                .map(|(w, n)| format!("{n} for {}", w.as_deref().unwrap_or("(no workspace named)")))
                .collect();
            println!(
                "unroutable          {} (no configured credential reaches them: add the workspace)",
                named.join(", ")
            );
        }
    }
    match s.last_webhook_at {
        Some(at) => println!("last webhook        {} ({} ago)", at.to_rfc3339(), seconds(s.last_webhook_age_seconds)),
        None => println!("last webhook        never"),
    }
    println!("mirrored codes      {}", s.mirrored_codes);
    // The single-key setup whose workspace is not known yet shows as before; every
    // workspace known by id gets a heading.
    let headings = workspaces.len() > 1 || workspaces.iter().any(|w| !w.key.is_empty());
    for w in &workspaces {
        if headings {
            println!("workspace           {}", workspace_name(w.label.as_deref(), &w.key));
        }
        print_catch_up(w.catch_up.as_ref(), &seconds);
        print_import(w.import.as_ref());
    }
    print_backup_status(&backups, settings.backup.pull_on_failure);
    Ok(())
}

fn print_catch_up(state: Option<&CatchUpState>, seconds: &dyn Fn(Option<f64>) -> String) {
    let Some(c) = state else {
        println!("catch-up            never ran");
        println!("caught up           never");
        return;
    };
    match (c.last_run_at, c.last_outcome) {
        (Some(at), Some(outcome)) => println!(
            "catch-up            last run {} {outcome}{}: {} event(s) found, {} new; log read up to {} ({} ago)",
            at.to_rfc3339(),
            if outcome == CatchUpRun::Partial { " (page cap reached; the next run goes on)" } else { "" },
            c.last_events_found,
            c.last_events_new,
            c.high_water_mark.map_or_else(|| "-".to_owned(), |t| t.to_rfc3339()),
            seconds(c.mark_age_seconds),
        ),
        _ => println!("catch-up            never ran"),
    }
    match c.last_success_at {
        Some(at) => println!("caught up           {} ({} ago)", at.to_rfc3339(), seconds(c.success_age_seconds)),
        None => println!("caught up           never"),
    }
    if let Some(error) = &c.last_error {
        println!("catch-up error      {error}");
    }
}

fn print_import(run: Option<&import_progress::RunSummary>) {
    let Some(r) = run else {
        println!("import              never ran");
        return;
    };
    let state = match r.finished_at {
        Some(at) => format!("run {} finished {}", r.id, at.to_rfc3339()),
        None => {
            format!(
                "run {} unfinished (running, or cut short: it resumes), started {}",
                r.id,
                r.started_at.to_rfc3339()
            )
        }
    };
    println!(
        "import              {state}: {}/{} device(s) done{}, {} code(s) imported ({} created, {} changed, {} unchanged, {} stale, {} skipped), {} re-fetch(es) queued, {} Seam call(s)",
        r.devices_done,
        r.devices_total,
        if r.devices_listed { "" } else { " (still listing devices)" },
        r.codes_imported(),
        r.codes_created,
        r.codes_changed,
        r.codes_unchanged,
        r.codes_stale,
        r.codes_skipped,
        r.codes_queued,
        r.seam_calls,
    );
    if let Some(error) = &r.last_error {
        println!("import error        {error}");
    }
}

/// `status`'s lines on backup access code pulls: counts, each failed pull with
/// Seam's reason, and the failing codes left alone, saying why.
fn print_backup_status(b: &backup_store::PullStatus, pull_on_failure: bool) {
    println!(
        "backup pulls        {} pulled, {} failed, {} in progress{}",
        b.pulled,
        b.failed.len(),
        b.decided + b.sending,
        if pull_on_failure { "" } else { " (backup.pull_on_failure is off: by hand only)" }
    );
    for f in &b.failed {
        let error = shortened_keeping_request_id(f.last_error.as_deref().unwrap_or(""), 100);
        println!("backup pull failed  {} ({}, {} attempt(s)): {error}", f.access_code_id, f.reason, f.attempts);
    }
    if b.left_alone_not_time_bound + b.left_alone_no_backup_available > 0 {
        println!(
            "no backup pulled    {} failing code(s) not time_bound (Seam pulls backups for time-bound codes only), {} with no backup available (is_backup_access_code_available is not true)",
            b.left_alone_not_time_bound, b.left_alone_no_backup_available
        );
    }
}

/// `pull-backup`: the same pull the service makes (`jobs::backup`), for one code,
/// now, in the foreground.
async fn pull_backup(settings: Settings, access_code_id: &str) -> Outcome {
    if access_code_id.trim().is_empty() || access_code_id.len() > 255 {
        anyhow::bail!("not an access code id: {access_code_id:?}");
    }
    settings.check_seam_key()?;
    let pool = existing_database(&settings).await?;
    let mirrored = backup_store::candidate(&pool, access_code_id).await?;
    if let Some(why) = mirrored.as_ref().and_then(backup_store::Candidate::why_not) {
        anyhow::bail!("not pulled: {access_code_id} {why}");
    }
    let workspaces =
        Workspaces::new(&settings.workspace_entries()?, &settings.seam, settings.worker.max_requests_per_second)?;
    let (refusals, _) = workspaces.resolve().await;
    if !refusals.is_empty() {
        return Err(StartRefused(refusals).into());
    }
    let workspace_id = mirrored.as_ref().and_then(|c| c.workspace_id.as_deref());
    let backup_id = match backup_store::decide_by_hand(&pool, access_code_id, workspace_id).await? {
        backup_store::ByHand::Pulled(backup) => {
            let backup = backup.unwrap_or_default();
            println!("a backup was pulled for {access_code_id} before: backup access code {backup}");
            return print_backup_pin(&settings, &pool, &backup, None).await;
        }
        backup_store::ByHand::Decided | backup_store::ByHand::Pending => access_code_id,
    };
    let metrics = Arc::new(Metrics::new());
    let puller = BackupPuller::new(
        pool.clone(),
        workspaces,
        settings.worker.clone(),
        settings.backup.clone(),
        settings.store_pins,
        metrics,
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let pause = match puller.try_pull_next(Some(backup_id)).await? {
            PullStep::Done { result: PullResult::Pulled(backup), .. } => {
                println!("backup access code {}", backup.code.access_code_id);
                return print_backup_pin(&settings, &pool, &backup.code.access_code_id, backup.code.code.as_deref())
                    .await;
            }
            PullStep::Done { result: PullResult::Recovered { backup_access_code_id }, .. } => {
                println!("backup access code {backup_access_code_id}");
                return print_backup_pin(&settings, &pool, &backup_access_code_id, None).await;
            }
            PullStep::Done { result: PullResult::Failed { error }, .. } => {
                anyhow::bail!("no backup pulled for {access_code_id}: {error}")
            }
            PullStep::Done { result: PullResult::Retry { delay, error }, .. } => {
                eprintln!("not pulled yet ({error}); trying again in {:.1} s", delay.as_secs_f64());
                delay
            }
            // Claimed by a running service, or its retry not due yet: wait for it.
            PullStep::Done { result: PullResult::ClaimLost, .. } | PullStep::Idle => std::time::Duration::from_secs(1),
        };
        if std::time::Instant::now() + pause > deadline {
            anyhow::bail!(
                "no backup pulled for {access_code_id} yet; the pull stays decided and a running worker makes it \
                 (`seam-access-sync status` shows how it ends)"
            );
        }
        tokio::time::sleep(pause).await;
    }
}

/// The backup's PIN, with `store_pins = true` only: from Seam's answer, or the mirror.
async fn print_backup_pin(settings: &Settings, pool: &sqlx::PgPool, backup: &str, answered: Option<&str>) -> Outcome {
    if !settings.store_pins {
        return Ok(());
    }
    let pin = match answered {
        Some(pin) => Some(pin.to_owned()),
        None => backup_store::mirrored_pin(pool, backup).await?,
    };
    match pin {
        Some(pin) => println!("PIN {pin}"),
        None => println!("PIN not known yet (the backup code is fetched from Seam shortly)"),
    }
    Ok(())
}

async fn healthcheck(settings: Settings, url: Option<String>) -> Outcome {
    let url = url.unwrap_or_else(|| {
        let addr = settings.server.listen_addr.replace("0.0.0.0", "127.0.0.1").replace("[::]", "[::1]");
        format!("http://{addr}/readyz")
    });
    crate::install_tls_provider();
    let response = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()?
        .get(&url)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{url} did not answer: {e}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    anyhow::ensure!(status.is_success(), "{url} answered {status}: {body}");
    println!("ready");
    Ok(())
}

/// SIGTERM or Ctrl-C starts a graceful shutdown.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown signal received; finishing work in flight");
    shutdown.cancel();
}
