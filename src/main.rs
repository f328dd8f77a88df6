//! The `pushgate` command: parse the command line, load the config, build the app, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pushgate::app::App;
use pushgate::config::Config;

mod demo;
mod send;

#[derive(Parser)]
#[command(
    version,
    about = "Push-notification gateway: TCP telegrams → Redis → Rhai routes → FCM"
)]
struct Cli {
    /// Log lines as human-readable text or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway until SIGTERM (SIGHUP reloads config and scripts).
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate the config and compile every script; non-zero exit on any error.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Everything on loopback: a managed Redis in a scratch dir and two example ports.
    Demo {
        /// Where the demo keeps its config, scripts and Redis data (default: a temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Console and admin API address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        admin: std::net::SocketAddr,
        /// Let the two example ports take any free port (for tests).
        #[arg(long, hide = true)]
        ephemeral_ports: bool,
    },
    /// Print a new random API key and the sha256 line for the config.
    ApiKey,
    /// Read a password from stdin and print its argon2id hash for `[[user]] password`.
    HashPassword,
    /// Send telegrams (JSON lines from a file or stdin) to a port and print the acks.
    Send(send::SendArgs),
    /// A strict stand-in for FCM HTTP v1 (token endpoint + messages:send) on loopback.
    FcmEmulator(pushgate::emulator::EmulatorArgs),
    /// A strict stand-in for Apple's provider API (APNs with token auth), HTTP/2 only.
    ApnsEmulator(pushgate::emulator::apns::ApnsEmulatorArgs),
    /// A strict local messaging gateway (Alimtalk, SMS) for the fallback ladder's tests.
    GatewayEmulator(pushgate::emulator::gateway::GatewayEmulatorArgs),
}

fn main() -> ExitCode {
    pushgate::admin::auth::return_large_allocations();
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: the journal and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    match cli.command {
        Command::Check { config } => check(&config),
        Command::HashPassword => {
            let mut line = String::new();
            if std::io::stdin().read_line(&mut line).is_err()
                || line.trim_end_matches(['\r', '\n']).is_empty()
            {
                eprintln!("pushgate: type the password on standard input (one line)");
                return ExitCode::FAILURE;
            }
            match pushgate::admin::hash_password(line.trim_end_matches(['\r', '\n'])) {
                Ok(hash) => {
                    println!("{hash}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pushgate: hashing: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::ApiKey => {
            let (key, hash) = pushgate::admin::new_api_key();
            println!("key:    {key}");
            println!("config: sha256 = \"{hash}\"");
            ExitCode::SUCCESS
        }
        Command::Serve { config } => run(async move {
            let loaded = Config::load(&config)?;
            App::start(loaded, &config)
                .await?
                .run_until_signalled()
                .await
        }),
        Command::Demo {
            dir,
            admin,
            ephemeral_ports,
        } => run(demo::run(dir, admin, ephemeral_ports)),
        Command::Send(args) => run(send::run(args)),
        Command::FcmEmulator(args) => {
            run(async move { pushgate::emulator::run(args, terminated()?).await })
        }
        Command::ApnsEmulator(args) => {
            run(async move { pushgate::emulator::apns::run(args, terminated()?).await })
        }
        Command::GatewayEmulator(args) => {
            run(async move { pushgate::emulator::gateway::run(args, terminated()?).await })
        }
    }
}

/// Resolves on SIGTERM or SIGINT (SIGHUP is ignored): when an emulator stops.
fn terminated() -> std::io::Result<impl std::future::Future<Output = ()>> {
    let mut signals = pushgate::signals::listen()?;
    Ok(async move {
        while let Some(signal) = signals.recv().await {
            if signal == pushgate::signals::Signal::Terminate {
                break;
            }
        }
    })
}

fn run(work: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pushgate: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pushgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `pushgate check`: one line per problem, `file:line:column: message` where known.
fn check(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            for line in e.lines() {
                eprintln!("{line}");
            }
            return ExitCode::FAILURE;
        }
    };
    let engine = pushgate::app::engine_for(&config);
    let mut failed = false;
    for port in &config.ports {
        if let Err(e) = pushgate::supervisor::compile_script(&engine, &config, port) {
            eprintln!("{e}");
            failed = true;
        }
    }
    if let Err(e) = pushgate::app::compile_api_routes(&engine, &config) {
        eprintln!("{e}");
        failed = true;
    }
    for app in config.apps() {
        // Reads the app's key (service account or .p8) and builds its client.
        if let Err(e) = pushgate::sender::apps::client_for(&config, app) {
            eprintln!("app {:?}: {e:#}", app.name);
            failed = true;
        }
        if let Some(ca_file) = &app.ca_file
            && let Err(e) = pushgate::fcm::read_ca_file(&config.resolve(ca_file))
        {
            eprintln!("app {:?}: {e}", app.name);
            failed = true;
        }
    }
    if failed {
        return ExitCode::FAILURE;
    }
    println!(
        "{}: ok ({} ports, {} apps, every script compiles)",
        path.display(),
        config.ports.len(),
        config.apps().count()
    );
    ExitCode::SUCCESS
}
