//! The command line: `handler [serve]`, the read commands (`users`, `organizations`,
//! `memberships`), and `handler reconcile`.

use std::net::IpAddr;

use clap::{Args, Parser, Subcommand};

use crate::sync::item::{ItemId, Kind};

/// Mirrors Clerk users, organizations and memberships into Azure Cosmos DB from Svix-signed
/// webhooks. Runs as the Azure Functions custom handler, or standalone. Configuration comes from
/// the environment (see the README); with no Cosmos setting, items are kept in a local store.
#[derive(Debug, Parser)]
#[command(name = "handler", version, propagate_version = true)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Serving options when no command is given.
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve webhooks (the default).
    Serve(ServeArgs),
    /// Read the stored users.
    #[command(subcommand)]
    Users(ItemsCommand),
    /// Read the stored organizations.
    #[command(subcommand)]
    Organizations(ItemsCommand),
    /// Read the stored memberships.
    #[command(subcommand)]
    Memberships(MembershipsCommand),
    /// Make the store equal Clerk: sweep every user, organization and membership from Clerk's
    /// Backend API (CLERK_SECRET_KEY), create what is missing, update what is stale, tombstone
    /// what Clerk confirms gone. Exits 0 done (dry run: nothing to do), 4 a dry run found drift,
    /// 3 Clerk or the store unavailable, 2 configuration.
    Reconcile(ReconcileArgs),
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Change nothing; report what would be created, updated and deleted.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Port to listen on when FUNCTIONS_CUSTOMHANDLER_PORT is not set [default: 7071].
    #[arg(long)]
    pub port: Option<u16>,
    /// Address to bind [default: 127.0.0.1].
    #[arg(long)]
    pub bind: Option<IpAddr>,
}

#[derive(Debug, Subcommand)]
pub enum ItemsCommand {
    /// Print one document as JSON; exits 1 when it is missing or deleted.
    Get {
        /// The Clerk id, such as user_2abc... or org_2abc...
        id: String,
    },
    /// Print every document, one JSON object per line.
    List,
}

#[derive(Debug, Subcommand)]
pub enum MembershipsCommand {
    /// Print memberships, one JSON object per line: all of them, or those of an organization
    /// and/or a user.
    List {
        /// Only this organization's memberships (org_...).
        #[arg(long, value_parser = id_of(Kind::Organization))]
        organization: Option<ItemId>,
        /// Only this user's memberships (user_...).
        #[arg(long, value_parser = id_of(Kind::User))]
        user: Option<ItemId>,
    },
}

fn id_of(kind: Kind) -> impl Fn(&str) -> Result<ItemId, String> + Clone + Send + Sync + 'static {
    move |raw| ItemId::parse_as(kind, raw).map_err(|e| e.to_string())
}
