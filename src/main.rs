//! The `veer` command: parses arguments and calls the library. No logic lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "veer",
    version,
    about = "A layer-7 reverse proxy that shifts traffic between versions of an application"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve: proxy traffic as the config file says, until SIGTERM or SIGINT (SIGHUP reloads).
    Run {
        /// The config file (default: $VEER_CONFIG, then veer.toml).
        #[arg(long, short, env = "VEER_CONFIG", default_value = "veer.toml")]
        config: PathBuf,
        /// Take over from the veer running with this config's listen.upgrade_socket: its
        /// listening sockets and runtime state move here, then it drains.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a config file: a one-line summary, or every error with file:line:col.
    Check {
        /// The config file (default: $VEER_CONFIG, then veer.toml).
        #[arg(long, short, env = "VEER_CONFIG", default_value = "veer.toml")]
        config: PathBuf,
    },
    /// Run the embedded demo: two app versions (blue, green) behind veer with a 90/10 split.
    Demo {
        /// Where the demo proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Where the demo's admin API listens.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: std::net::SocketAddr,
        /// Also serve HTTPS with this PEM certificate (needs --key).
        #[arg(long, requires = "key")]
        cert: Option<std::path::PathBuf>,
        /// The PEM private key of --cert.
        #[arg(long, requires = "cert")]
        key: Option<std::path::PathBuf>,
        /// Where the demo serves HTTPS (with --cert and --key).
        #[arg(long, default_value = "127.0.0.1:8443")]
        https: std::net::SocketAddr,
    },
    /// Drive a running veer through its admin API: status, splits, promote, rollback, drains, rollouts.
    Ctl(veer::ctl::CtlArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run { config, upgrade } => match veer::config::load(&config) {
            Ok(compiled) => veer::run::main(config, compiled, upgrade),
            Err(errors) => {
                eprintln!("{errors}");
                eprintln!("veer: {} error(s); not starting", errors.0.len());
                2
            }
        },
        Command::Check { config } => check(&config),
        Command::Demo {
            listen,
            admin,
            cert,
            key,
            https,
        } => {
            let tls = cert
                .zip(key)
                .map(|(cert, key)| veer::demo::DemoTls { https, cert, key });
            veer::demo::main(listen, admin, tls)
        }
        Command::Ctl(args) => veer::ctl::main(args),
    };
    veer::telemetry::flush();
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn check(path: &std::path::Path) -> i32 {
    match veer::config::load(path) {
        Ok(compiled) => {
            if let Err(refused) = compiled.admit() {
                for problem in &refused.0 {
                    eprintln!("{}: {problem}", path.display());
                }
                return 2;
            }
            match veer::tls::load(compiled.settings.tls.as_ref()) {
                Ok(Some(certificates)) => {
                    let now = std::time::SystemTime::now();
                    for warning in certificates.expiry_warnings(now, veer::tls::EXPIRY_WARNING) {
                        eprintln!("{}: warning: {warning}", path.display());
                    }
                }
                Ok(None) => {}
                Err(errors) => {
                    for problem in &errors.0 {
                        eprintln!("{}: {problem}", path.display());
                    }
                    return 2;
                }
            }
            println!("{}: {}", path.display(), compiled.summary());
            0
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} error(s)", path.display(), errors.0.len());
            2
        }
    }
}
