//! The `handler` binary: parse the command line and configuration, then serve or answer a
//! command.

use std::process::ExitCode;

use clap::Parser;
use handler::clerk::api::ClerkApi;
use handler::cli::{Cli, Command, ItemsCommand, MembershipsCommand, ReconcileArgs, ServeArgs};
use handler::commands::items::{self, ItemsError};
use handler::commands::reconcile::{self, Finished};
use handler::config::{self, ConfigError, ConfigErrors, Env, ServeSettings, Settings};
use handler::startup;
use handler::store::{ListFilter, StoreSettings};
use handler::sync::item::Kind;
use handler::telemetry::{self, LogFormat, Target};

// Exit statuses beside 0 and 1 (`ExitCode::FAILURE`: serving failed, or `get` found nothing).
/// Configuration refused at startup.
const EXIT_CONFIG: u8 = 2;
/// A command could not reach the store (or, for reconcile, Clerk): distinct from "not found",
/// for scripts.
const EXIT_UNAVAILABLE: u8 = 3;
/// A reconcile dry run found drift.
const EXIT_DRIFT: u8 = 4;

/// What a read command asks of the store.
enum Read {
    Get(Kind, String),
    List(ListFilter),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = Env::from_process();
    match cli.command {
        None => serve(&env, cli.serve),
        Some(Command::Serve(args)) => serve(&env, args),
        Some(Command::Users(command)) => run_read(&env, items_read(Kind::User, command)),
        Some(Command::Organizations(command)) => {
            run_read(&env, items_read(Kind::Organization, command))
        }
        Some(Command::Memberships(MembershipsCommand::List { organization, user })) => {
            let filter = ListFilter {
                organization_id: organization,
                user_id: user,
                ..ListFilter::all(Kind::Membership)
            };
            run_read(&env, Read::List(filter))
        }
        Some(Command::Reconcile(args)) => run_reconcile(&env, args),
    }
}

fn items_read(kind: Kind, command: ItemsCommand) -> Read {
    match command {
        ItemsCommand::Get { id } => Read::Get(kind, id),
        ItemsCommand::List => Read::List(ListFilter::all(kind)),
    }
}

fn serve(env: &Env, args: ServeArgs) -> ExitCode {
    let loaded = (
        Settings::load(env),
        ServeSettings::load(env, args.port, args.bind),
    );
    let (settings, serve) = match loaded {
        (Ok(settings), Ok(serve)) => (settings, serve),
        (settings, serve) => {
            let problems = [settings.err(), serve.err()]
                .into_iter()
                .flatten()
                .flat_map(|errors| errors.0);
            return refuse_as(env.log_format(), &ConfigErrors(problems.collect()));
        }
    };
    let format = settings.log_format;
    telemetry::init(format, Target::Stdout, "info");
    match run(startup::serve(settings, serve)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => report_as(format, error, ExitCode::FAILURE),
    }
}

fn run_read(env: &Env, read: Read) -> ExitCode {
    let settings = match Settings::load(env) {
        Ok(settings) => settings,
        Err(errors) => return refuse(&errors),
    };
    telemetry::init(settings.log_format, Target::Stderr, "warn");
    let outcome = run(async {
        if let StoreSettings::Local { path } = &settings.store {
            // Reading never creates a store: a mistyped path would otherwise list no users.
            anyhow::ensure!(
                path.exists(),
                "no local store at {} (LOCAL_STORE_PATH); it is created when the server stores \
                 its first delivery",
                path.display()
            );
        }
        let store = startup::open_store(&settings.store)?;
        let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
        let result = match read {
            Read::Get(kind, id) => items::get(store.as_ref(), kind, &id, &mut stdout).await,
            Read::List(filter) => items::list(store.as_ref(), filter, &mut stdout).await,
        };
        Ok::<_, anyhow::Error>(result)
    });
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(ItemsError::NotFound { kind, id })) => {
            eprintln!("handler: no {kind} {id} (missing or deleted)");
            ExitCode::FAILURE
        }
        Ok(Err(other)) => report(other.into(), ExitCode::from(EXIT_UNAVAILABLE)),
        Err(error) => report(error, ExitCode::from(EXIT_UNAVAILABLE)),
    }
}

fn run_reconcile(env: &Env, args: ReconcileArgs) -> ExitCode {
    let settings = match Settings::load(env) {
        Ok(settings) => settings,
        Err(errors) => return refuse(&errors),
    };
    let Some(clerk_settings) = &settings.clerk_api else {
        return refuse(&ConfigErrors(vec![ConfigError {
            variable: config::CLERK_SECRET_KEY,
            problem: "is not set; reconcile reads Clerk's Backend API with the secret key \
                      (sk_live_... or sk_test_...) from the Clerk dashboard's API keys page"
                .into(),
        }]));
    };
    telemetry::init(settings.log_format, Target::Stderr, "info");
    let outcome = run(async {
        let clerk = ClerkApi::new(clerk_settings)?;
        let store = startup::open_store(&settings.store)?;
        let mut stdout = std::io::stdout().lock();
        let finished = reconcile::run(
            store.as_ref(),
            &clerk,
            settings.tombstone_ttl_seconds,
            args.dry_run,
            args.json,
            &mut stdout,
        )
        .await?;
        Ok::<_, anyhow::Error>(finished)
    });
    match outcome {
        Ok(Finished::InSync) => ExitCode::SUCCESS,
        Ok(Finished::Drift) => ExitCode::from(EXIT_DRIFT),
        Ok(Finished::Incomplete) => ExitCode::from(EXIT_UNAVAILABLE),
        Err(error) => report(error, ExitCode::from(EXIT_UNAVAILABLE)),
    }
}

fn run<T>(work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(work)
}

/// Says why the configuration is refused, one line per problem: text for a person, a JSON line
/// (event `config_refused`) for the Functions host.
fn refuse_as(format: LogFormat, errors: &ConfigErrors) -> ExitCode {
    for problem in &errors.0 {
        match format {
            LogFormat::Text => eprintln!("handler: configuration: {problem}"),
            LogFormat::Json => eprintln!(
                "{}",
                telemetry::error_line(
                    "config_refused",
                    &[
                        ("variable", problem.variable),
                        ("problem", &problem.problem)
                    ]
                )
            ),
        }
    }
    ExitCode::from(EXIT_CONFIG)
}

fn refuse(errors: &ConfigErrors) -> ExitCode {
    refuse_as(LogFormat::Text, errors)
}

/// Says why a command or the server failed: text for a person, a JSON line (event `failed`) for
/// the Functions host.
fn report_as(format: LogFormat, error: anyhow::Error, status: ExitCode) -> ExitCode {
    match format {
        LogFormat::Text => eprintln!("handler: {error:#}"),
        LogFormat::Json => eprintln!(
            "{}",
            telemetry::error_line("failed", &[("error", &format!("{error:#}"))])
        ),
    }
    status
}

fn report(error: anyhow::Error, status: ExitCode) -> ExitCode {
    report_as(LogFormat::Text, error, status)
}
