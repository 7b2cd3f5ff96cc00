//! The command line: `handler [serve]`, `handler users get <id>`, `handler users list`.

use std::net::IpAddr;

use clap::{Args, Parser, Subcommand};

/// Mirrors Clerk users into Azure Cosmos DB from Svix-signed webhooks. Runs as the Azure
/// Functions custom handler for `ClerkWebhook`, or standalone. Configuration comes from the
/// environment (see the README); with no Cosmos setting, users are kept in a local store.
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
    Users(UsersCommand),
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
pub enum UsersCommand {
    /// Print one user's document as JSON; exits 1 when the user is missing or deleted.
    Get {
        /// The Clerk user id, such as user_2abc...
        id: String,
    },
    /// Print every user document, one JSON object per line.
    List,
}
