//! `lc serve` (the HTTP API of `lc-http`) and `lc tokens` (its callers' tokens).

use std::time::Duration;

use clap::{Args, Subcommand};
use lc_deployment::Deployments;
use lc_shared::config::parse_duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::output;

/// Serves until SIGTERM or Ctrl-C, then lets requests in flight finish.
pub async fn serve(deployments: &Deployments, args: lc_http::ServeArgs) -> anyhow::Result<i32> {
    let shutdown = CancellationToken::new();
    tokio::spawn(lc_shared::shutdown::cancel_on_signal(
        shutdown.clone(),
        "requests in flight are cut off",
    ));
    lc_http::serve(args, deployments.clone(), shutdown, |address, tls| {
        let scheme = if tls { "https" } else { "http" };
        // The line scripts and tests read to learn the port (`--listen 127.0.0.1:0`).
        println!("lc serve: listening on {scheme}://{address}");
    })
    .await?;
    Ok(0)
}

#[derive(Subcommand, Debug)]
pub enum TokensCommand {
    /// Make a token for an owner; it is printed once and stored only as a hash
    #[command(after_help = "Examples:
  lc tokens create --owner alice                 # sees and changes alice's jobs and deployments
  lc tokens create --owner ops --admin           # sees everything; may pause queues and set limits
  lc tokens create --owner ci --expires 90d
  lc tokens create --owner alice --json          # {\"id\": ..., \"token\": \"lc_...\", ...}")]
    Create(CreateArgs),
    /// List tokens (their prefixes, never the tokens)
    Ls(LsArgs),
    /// Revoke a token: it stops working at once
    Revoke(RevokeArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Whose jobs and deployments the token sees and changes
    #[arg(long)]
    pub owner: String,
    /// The token sees everything and may pause queues and set concurrency limits
    #[arg(long)]
    pub admin: bool,
    /// The token stops working after this long (30d, 90d, 12h); never by default
    #[arg(long, value_parser = parse_duration)]
    pub expires: Option<Duration>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RevokeArgs {
    /// The token's id (from `lc tokens ls`)
    pub id: Uuid,
}

pub async fn tokens(deployments: &Deployments, command: TokensCommand) -> anyhow::Result<i32> {
    let tokens = deployments.producer().tokens();
    match command {
        TokensCommand::Create(args) => {
            let made = tokens.create(&args.owner, args.admin, args.expires).await?;
            if args.json {
                output::json(&serde_json::json!({
                    "id": made.row.id,
                    "owner": made.row.owner,
                    "admin": made.row.admin,
                    "expires_at": made.row.expires_at,
                    "token": made.secret,
                }))?;
            } else {
                println!("{}", made.secret);
                eprintln!(
                    "token {} for owner {}{}: shown once, keep it secret (send it as `Authorization: Bearer <token>`)",
                    made.row.id,
                    made.row.owner,
                    if made.row.admin { " (admin)" } else { "" }
                );
            }
            Ok(0)
        }
        TokensCommand::Ls(args) => {
            let rows = tokens.list().await?;
            if args.json {
                output::json(&rows)?;
                return Ok(0);
            }
            let table: Vec<Vec<String>> = rows
                .iter()
                .map(|row| {
                    let status = match (row.revoked_at, row.expires_at) {
                        (Some(_), _) => "revoked".to_owned(),
                        (None, Some(at)) if at <= chrono::Utc::now() => "expired".to_owned(),
                        _ => "active".to_owned(),
                    };
                    vec![
                        row.id.to_string(),
                        format!("{}…", row.prefix),
                        row.owner.clone(),
                        if row.admin { "yes" } else { "no" }.to_owned(),
                        status,
                        output::opt(&row.expires_at),
                        output::opt(&row.last_used_at),
                    ]
                })
                .collect();
            output::table(
                &[
                    "ID",
                    "PREFIX",
                    "OWNER",
                    "ADMIN",
                    "STATUS",
                    "EXPIRES",
                    "LAST USED",
                ],
                &table,
            );
            Ok(0)
        }
        TokensCommand::Revoke(args) => {
            let row = tokens.revoke(args.id).await?;
            println!("token {} of owner {} revoked", row.id, row.owner);
            Ok(0)
        }
    }
}
