//! The command line: `wasp` (demo), `wasp run --config FILE`,
//! `wasp check --config FILE`, `wasp iptables install|remove`,
//! `wasp inject [FILE]`, `wasp probe [URL]`, `wasp --version`.

use crate::config;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "wasp",
    version,
    about = "A WebAssembly-extensible sidecar proxy. Without a command, runs the embedded demo."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with a config file.
    Run {
        /// Config file (YAML or JSON).
        #[arg(long, short, env = "WASP_CONFIG")]
        config: PathBuf,
    },
    /// Validate a config file and print every error; exit 1 if any.
    Check {
        /// Config file (YAML or JSON).
        #[arg(long, short, env = "WASP_CONFIG", required_unless_present = "file")]
        config: Option<PathBuf>,
        /// Config file, positionally.
        #[arg(conflicts_with = "config")]
        file: Option<PathBuf>,
    },
    /// Install or remove the nat rules that send the app's TCP through
    /// wasp (run as root with NET_ADMIN, e.g. in an init container).
    Iptables {
        #[command(subcommand)]
        action: Iptables,
    },
    /// Add wasp to the pods of Kubernetes YAML (a file, or stdin) and write it to stdout.
    Inject {
        /// Kubernetes YAML: workloads, Pods, Lists, several `---` documents; `-` or nothing: stdin.
        file: Option<PathBuf>,
        /// Image of the injected containers (its entrypoint must be `wasp`).
        #[arg(long, default_value_t = crate::inject::default_image())]
        image: String,
        /// Mount this ConfigMap (with a `wasp.yaml` key) at /etc/wasp instead of
        /// the config inject generates into the `wasp.io/config` annotation.
        #[arg(long, value_name = "NAME")]
        config_map: Option<String>,
    },
    /// Compile the filter module on stdin into a compiled-code cache (run
    /// by wasp itself, so that the compiler's memory is not the proxy's).
    #[command(hide = true)]
    CompileFilter {
        #[arg(long)]
        cache: PathBuf,
        #[arg(long)]
        instances: u32,
        #[arg(long)]
        max_memory: usize,
        #[arg(long)]
        reservation: u64,
        #[arg(long)]
        guard: u64,
    },
    /// GET an admin URL; exit 0 if it answers 2xx (a health check without curl).
    Probe {
        /// An `http://host:port/path` URL.
        #[arg(default_value = "http://127.0.0.1:9901/readyz")]
        url: String,
        /// Give up after this long.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

#[derive(Subcommand)]
enum Iptables {
    /// Redirect inbound TCP to the ingress listener and outbound TCP to the
    /// egress listener (replacing any rules an earlier install left).
    Install(crate::iptables::Install),
    /// Remove every rule `install` added.
    Remove(crate::iptables::Remove),
}

/// Parses arguments, runs the command, and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Inject { file, image, config_map }) => {
            return inject(file, crate::inject::Options { image, config_map });
        }
        Some(Command::Probe { url, timeout }) => return probe(&url, timeout),
        Some(Command::CompileFilter { cache, instances, max_memory, reservation, guard }) => {
            let slots = crate::filter::runtime::Slots { reservation, guard };
            let settings = crate::filter::compile::Settings { cache, instances, max_memory, slots };
            return crate::filter::compile::child_main(&settings);
        }
        // Serving: with glibc's per-thread cache deep enough for requests in flight.
        None | Some(Command::Run { .. }) => crate::malloc::tune(),
        _ => {}
    }
    init_logging();
    crate::tls::install();
    match cli.command {
        None => report(crate::demo::run()),
        Some(Command::Run { config }) => match crate::live::read(&config) {
            Ok((cfg, file)) => report(crate::server::run_blocking(cfg, Some(file)).map_err(|e| e.to_string())),
            Err(unread) => {
                eprintln!("wasp: invalid config {}:\n{}", config.display(), unread.into_errors(&config));
                ExitCode::FAILURE
            }
        },
        Some(Command::Iptables { action }) => {
            let done = match &action {
                Iptables::Install(settings) => crate::iptables::install(settings),
                Iptables::Remove(settings) => crate::iptables::remove(settings),
            };
            match done {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("wasp iptables: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Check { config, file }) => {
            let path = config.or(file).unwrap_or_default();
            let checked = crate::live::read(&path).map_err(|u| u.into_errors(&path)).and_then(|(cfg, _)| {
                let metrics = std::sync::Arc::new(crate::metrics::Metrics::new());
                let (clusters, mut errors) = match crate::live::clusters(&cfg, &metrics, None) {
                    Ok((clusters, _)) => (clusters, Vec::new()),
                    Err(e) => (Default::default(), e),
                };
                errors.extend(crate::tls::check_listeners(&cfg, &metrics));
                if errors.is_empty()
                    && let Err(e) = crate::filter::Registry::load(&cfg, &metrics, &clusters, &mut None, None)
                {
                    errors.extend(e);
                }
                if errors.is_empty() { Ok(()) } else { Err(config::ConfigErrors(errors)) }
            });
            match checked {
                Ok(()) => {
                    println!("{}: ok", path.display());
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Inject { .. } | Command::Probe { .. } | Command::CompileFilter { .. }) => {
            unreachable!("handled before logging starts")
        }
    }
}

/// `wasp inject`: stdout gets the whole result or nothing; stderr every problem.
fn inject(file: Option<PathBuf>, opts: crate::inject::Options) -> ExitCode {
    use std::io::{Read, Write};
    let (source, read) = match file.filter(|f| f.as_os_str() != "-") {
        Some(path) => (path.display().to_string(), std::fs::read_to_string(&path)),
        None => {
            let mut text = String::new();
            ("<stdin>".to_string(), std::io::stdin().read_to_string(&mut text).map(|_| text))
        }
    };
    let input = match read {
        Ok(text) => text,
        Err(e) => {
            eprintln!("wasp inject: {source}: cannot read: {e}");
            return ExitCode::FAILURE;
        }
    };
    match crate::inject::inject(&input, &opts) {
        Ok(out) => match std::io::stdout().lock().write_all(out.as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wasp inject: cannot write: {e}");
                ExitCode::FAILURE
            }
        },
        Err(errors) => {
            for e in errors {
                eprintln!("wasp inject: {source}: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

/// `wasp probe`: one GET, exit 0 on a 2xx answer.
fn probe(url: &str, timeout: std::time::Duration) -> ExitCode {
    match crate::probe::get(url, timeout) {
        Ok(status) if (200..300).contains(&status) => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("wasp probe: {url}: {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("wasp probe: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn report(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("wasp: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr: human-readable by default, JSON with `WASP_LOG_FORMAT=json`;
/// the level comes from `WASP_LOG` (default `info`, with the HTTP/2 library
/// and TLS libraries at `error`: h2 warns once per connection it ends for
/// abuse, rustls once per handshake with a client oddity such as an IP
/// address sent as SNI (wrk does), either of which a client turns into
/// thousands of lines a second; handshake failures are counted instead).
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("WASP_LOG").unwrap_or_else(|_| EnvFilter::new("info,h2=error,rustls=error"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("WASP_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
