//! `llmops audit`: generate keys, verify and inspect the tamper-evident audit log.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use llmops_govern::audit::keys::{self, load_public_key};
use llmops_govern::audit::{
    DirKeyStore, RecordFilter, VerifyOptions, decrypt_content, read_records, verify_log,
};

/// Arguments of `llmops audit`.
#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Write a new Ed25519 checkpoint key pair (`ed25519.key`, `ed25519.pub`) and a
    /// commitment key (`commitment.key`, for LLMOPS_AUDIT_KEY) into DIR.
    Keygen {
        /// Directory to write the keys to (created if needed; existing keys are never
        /// overwritten).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Check every record, link and checkpoint of a log. Exit 0 when intact; 1 with the first
    /// bad sequence number and the kind of damage otherwise.
    Verify {
        /// The active log file (rotated segments beside it are included).
        path: PathBuf,
        /// Checkpoint file to check the log against (needs --public-key).
        #[arg(
            long,
            alias = "checkpoint",
            value_name = "FILE",
            requires = "public_key"
        )]
        checkpoints: Option<PathBuf>,
        /// Ed25519 public key file the checkpoints must be signed with.
        #[arg(long, value_name = "FILE", requires = "checkpoints")]
        public_key: Option<PathBuf>,
        /// Also require every record to be in canonical form.
        #[arg(long)]
        strict: bool,
        /// Accept a log whose oldest segments were removed by retention.
        #[arg(long)]
        allow_pruned: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print records (one JSON object per line), filtered. Does not verify: run `verify` for
    /// that.
    Show {
        /// The active log file.
        path: PathBuf,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        /// Only this request id.
        #[arg(long, value_name = "ID")]
        request_id: Option<String>,
        /// Only records at or after TIME: RFC 3339 (`2026-01-31T12:00:00Z`) or an age (`2h`,
        /// `30m`, `7days`).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Directory of per-tenant content keys: decrypt stored content where the key still
        /// exists.
        #[arg(long, value_name = "DIR")]
        keys: Option<PathBuf>,
        /// Stop after N records.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
}

fn parse_since(s: &str) -> anyhow::Result<SystemTime> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    let age: Duration = humantime::parse_duration(s)
        .with_context(|| format!("--since {s:?}: expected RFC 3339 time or an age such as 2h"))?;
    SystemTime::now()
        .checked_sub(age)
        .context("--since: age is too large")
}

pub(crate) async fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    tokio::task::spawn_blocking(move || run_blocking(args))
        .await
        .context("audit command panicked")?
}

fn run_blocking(args: AuditArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AuditCommand::Keygen { out } => {
            let k = keys::generate_keys(&out)?;
            println!(
                "signing key:    {} (secret; [audit.checkpoints] signing_key_file)",
                k.signing_key.display()
            );
            println!(
                "public key:     {} (give to verifiers; key id {})",
                k.public_key.display(),
                k.key_id
            );
            println!(
                "commitment key: {} (secret; export LLMOPS_AUDIT_KEY=$(cat {}))",
                k.commitment_key.display(),
                k.commitment_key.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify {
            path,
            checkpoints,
            public_key,
            strict,
            allow_pruned,
            json,
        } => {
            let mut opts = VerifyOptions::default()
                .strict(strict)
                .allow_pruned_prefix(allow_pruned);
            if let (Some(cp), Some(pk)) = (checkpoints, public_key) {
                opts = opts.with_checkpoints(cp, load_public_key(&pk)?);
            }
            let report = verify_log(&path, &opts)?;
            if json {
                let d = report.damage.as_ref();
                let v = serde_json::json!({
                    "intact": report.is_intact(),
                    "records": report.records,
                    "first_seq": report.first_seq,
                    "last_seq": report.last_seq,
                    "head": report.head,
                    "files": report.files,
                    "checkpoints_verified": report.checkpoints_verified,
                    "damage": d.map(|d| serde_json::json!({
                        "kind": d.kind.as_str(),
                        "seq": d.seq,
                        "detail": d.detail,
                        "file": d.location.as_ref().map(|(p, _)| p.display().to_string()),
                        "line": d.location.as_ref().map(|(_, l)| l),
                    })),
                });
                println!("{v}");
            } else {
                println!("{}", report.summary());
            }
            Ok(if report.is_intact() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        AuditCommand::Show {
            path,
            tenant,
            request_id,
            since,
            keys,
            limit,
        } => {
            let since = since.as_deref().map(parse_since).transpose()?;
            let mut filter = RecordFilter::default();
            filter.tenant = tenant;
            filter.request_id = request_id;
            filter.since = since;
            let store = keys.map(DirKeyStore::open).transpose()?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            for (i, record) in read_records(&path, filter)?.enumerate() {
                if limit.is_some_and(|l| i >= l) {
                    break;
                }
                let mut record = record?;
                if let Some(store) = &store
                    && record.get("content").is_some()
                {
                    let decrypted = decrypt_content(&record, store.as_ref())?;
                    if let Some(map) = record.as_object_mut() {
                        map.insert(
                            "content_decrypted".into(),
                            decrypted.unwrap_or(serde_json::Value::Null),
                        );
                    }
                }
                if writeln!(out, "{record}").is_err() {
                    break; // closed pipe (e.g. `| head`)
                }
            }
            let _ = out.flush();
            Ok(ExitCode::SUCCESS)
        }
    }
}
