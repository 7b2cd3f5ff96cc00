//! The `handler` binary: parse the command line and configuration, then serve or answer a
//! `users` command.

use std::process::ExitCode;

use clap::Parser;
use handler::cli::{Cli, Command, ServeArgs, UsersCommand};
use handler::config::{ConfigErrors, Env, ServeSettings, Settings, StoreSettings};
use handler::startup;
use handler::telemetry::{self, Target};
use handler::users::{self, UsersError};

// Exit statuses beside 0 and 1 (`ExitCode::FAILURE`: serving failed, or `users get` found no user).
/// Configuration refused at startup.
const EXIT_CONFIG: u8 = 2;
/// A `users` command could not read the store: distinct from "not found", for scripts.
const EXIT_STORE: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = Env::from_process();
    match cli.command {
        None => serve(&env, cli.serve),
        Some(Command::Serve(args)) => serve(&env, args),
        Some(Command::Users(command)) => run_users(&env, command),
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
            return refuse(&ConfigErrors(problems.collect()));
        }
    };
    telemetry::init(settings.log_format, Target::Stdout, "info");
    match run(startup::serve(settings, serve)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => report(error, ExitCode::FAILURE),
    }
}

fn run_users(env: &Env, command: UsersCommand) -> ExitCode {
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
        let mut stdout = std::io::stdout().lock();
        let result = match command {
            UsersCommand::Get { id } => users::get(store.as_ref(), &id, &mut stdout).await,
            UsersCommand::List => users::list(store.as_ref(), &mut stdout).await,
        };
        Ok::<_, anyhow::Error>(result)
    });
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(UsersError::NotFound(id))) => {
            eprintln!("handler: no user {id} (missing or deleted)");
            ExitCode::FAILURE
        }
        Ok(Err(other)) => report(other.into(), ExitCode::from(EXIT_STORE)),
        Err(error) => report(error, ExitCode::from(EXIT_STORE)),
    }
}

fn run<T>(work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(work)
}

fn refuse(errors: &ConfigErrors) -> ExitCode {
    for problem in &errors.0 {
        eprintln!("handler: configuration: {problem}");
    }
    ExitCode::from(EXIT_CONFIG)
}

fn report(error: anyhow::Error, status: ExitCode) -> ExitCode {
    eprintln!("handler: {error:#}");
    status
}
