//! The `switchyard` command line: parses arguments and calls into the library. Nothing else
//! lives here, so every behaviour is reachable (and tested) through the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use switchyard::config::{self, Config, LogFormat};
use switchyard::endpoint::EndpointRegistry;
use switchyard::redirect;
use switchyard::router::{RequestView, Router};
use switchyard::state::Snapshot;

/// A Layer-7 HTTP load balancer and service-mesh sidecar.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log line format; overrides `[log] format` from the config.
    #[arg(long, global = true, value_enum)]
    log_format: Option<CliLogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum CliLogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy until SIGINT/SIGTERM.
    Run {
        #[arg(short, long, default_value = "config/switchyard.toml")]
        config: PathBuf,
    },
    /// Validate a config file: exit 0 with a summary, or 1 with `FILE:LINE:COL: message` lines.
    Check {
        #[arg(short, long, default_value = "config/switchyard.toml")]
        config: PathBuf,
        /// Instead of the summary, list what reloading from RUNNING to the checked file would
        /// change (listeners, routes, clusters, endpoints).
        #[arg(long, value_name = "RUNNING")]
        diff: Option<PathBuf>,
    },
    /// Show which route a request would take, and why earlier routes did not match.
    Explain {
        #[arg(short, long, default_value = "config/switchyard.toml")]
        config: PathBuf,
        /// The request, e.g. 'GET http://api.example.com/orders/1' or 'GET /path' with -H 'host: …'.
        request: String,
        /// A request header, 'name: value'; repeatable.
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// Only consider routes of this listener (default: the first listener).
        #[arg(long)]
        listener: Option<String>,
    },
    /// Start three built-in backends and the proxy in front of them, with an embedded config.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Announce a local service in etcd under a lease kept alive until SIGINT/SIGTERM, which
    /// deletes the key.
    Register {
        /// An etcd endpoint, `http://host:port`; repeatable.
        #[arg(long, required = true)]
        etcd: Vec<String>,
        /// The service name; the key is `{prefix}{service}/{address}`.
        #[arg(long)]
        service: String,
        /// The address sidecars should connect to.
        #[arg(long)]
        address: SocketAddr,
        /// The lease TTL: how long the key outlives a crashed process.
        #[arg(long, default_value = "10s", value_parser = config::parse_duration)]
        ttl: std::time::Duration,
        #[arg(long, default_value = "/services/")]
        prefix: String,
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        weight: u32,
        #[arg(long)]
        zone: Option<String>,
    },
    /// Transparent mode's privileged init step: write the nftables rules (table `inet
    /// switchyard`) that send this network namespace's inbound TCP to the inbound listener and
    /// its outbound TCP to the outbound listener. Needs root or CAP_NET_ADMIN; the proxy does
    /// not. Idempotent: the table is replaced in one transaction.
    Redirect {
        /// The UID the proxy runs under: its own connections are never redirected (no loop).
        #[arg(long, value_name = "UID", value_parser = redirect::parse_uid,
              required_unless_present = "remove")]
        proxy_uid: Option<u32>,
        /// The inbound listener's port [default: 15006, or the config's inbound listener].
        #[arg(long, value_name = "PORT", value_parser = redirect::parse_port)]
        inbound_port: Option<u16>,
        /// The outbound listener's port [default: 15001, or the config's outbound listener].
        #[arg(long, value_name = "PORT", value_parser = redirect::parse_port)]
        outbound_port: Option<u16>,
        /// Inbound destination ports left alone, e.g. 22,9901; repeatable.
        #[arg(long, value_name = "PORTS", value_delimiter = ',', value_parser = redirect::parse_port)]
        skip_inbound_ports: Vec<u16>,
        /// Outbound destination ports left alone, e.g. 25; repeatable.
        #[arg(long, value_name = "PORTS", value_delimiter = ',', value_parser = redirect::parse_port)]
        skip_outbound_ports: Vec<u16>,
        /// Outbound destinations left alone, IPv4 or IPv6, e.g. 10.0.0.0/8,fd00::/8; repeatable.
        #[arg(long, value_name = "CIDRS", value_delimiter = ',')]
        skip_outbound_cidrs: Vec<redirect::Cidr>,
        /// The proxy's config: its admin port is skipped inbound, and its inbound and
        /// outbound listeners' ports are the defaults of --inbound-port and --outbound-port.
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print the nft script instead of applying it.
        #[arg(long)]
        dry_run: bool,
        /// Delete the table instead (succeeds when it is absent).
        #[arg(long, conflicts_with_all = ["proxy_uid", "inbound_port", "outbound_port",
              "skip_inbound_ports", "skip_outbound_ports", "skip_outbound_cidrs", "config"])]
        remove: bool,
    },
    /// Development identities without a control plane: a local CA and leaves signed by it.
    Certs {
        #[command(subcommand)]
        action: CertsAction,
    },
}

#[derive(Subcommand)]
enum CertsAction {
    /// Make a development CA: DIR/ca.pem and DIR/ca.key (never replaces an existing key).
    Init {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        #[arg(long, default_value_t = 3650)]
        days: u64,
    },
    /// Issue a leaf signed by the CA in --ca: NAME.pem and NAME.key (server and client usage).
    Issue {
        /// Folder with ca.pem and ca.key.
        #[arg(long, default_value = "certs")]
        ca: PathBuf,
        /// File name and CN; also the DNS SAN unless --dns is given.
        #[arg(long)]
        name: String,
        /// URI SAN, the identity routes match, e.g. spiffe://local/orders.
        #[arg(long)]
        spiffe: Option<String>,
        /// DNS SAN; repeatable.
        #[arg(long)]
        dns: Vec<String>,
        /// IP SAN; repeatable.
        #[arg(long)]
        ip: Vec<std::net::IpAddr>,
        /// Output folder (default: the CA folder).
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value_t = 90)]
        days: u64,
    },
}

/// mimalloc instead of glibc's malloc: the request path allocates a few dozen small blocks
/// and, per upstream response, hyper's 8 KiB read buffer (an HTTP/2 stream also its boxed
/// future), which glibc serves from its slower bins, so mimalloc runs fewer instructions per
/// request. Built with `no_thp`: with transparent huge pages allowed, mimalloc's arenas
/// multiplied the idle RSS. Re-measure both (instructions per request, idle RSS) with
/// `benches/load/run.sh --instructions --baseline OLD_BINARY`; past runs are in
/// docs/performance.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(&config, cli.log_format),
        Command::Check { config, diff } => return check(&config, diff.as_deref()),
        Command::Explain {
            config,
            request,
            headers,
            listener,
        } => explain(&config, &request, &headers, listener.as_deref()),
        Command::Demo { listen } => {
            init_logging(cli.log_format.map_or(LogFormat::Text, Into::into));
            switchyard::demo::run(listen)
        }
        Command::Register {
            etcd,
            service,
            address,
            ttl,
            prefix,
            weight,
            zone,
        } => {
            init_logging(cli.log_format.map_or(LogFormat::Text, Into::into));
            register(switchyard::discovery::register::Registration {
                etcd,
                prefix,
                service,
                address,
                weight,
                zone,
                ttl,
            })
        }
        Command::Certs { action } => certs(action),
        Command::Redirect {
            proxy_uid,
            inbound_port,
            outbound_port,
            skip_inbound_ports,
            skip_outbound_ports,
            skip_outbound_cidrs,
            config,
            dry_run,
            remove,
        } => {
            let rules = proxy_uid.map(|proxy_uid| redirect::RuleArgs {
                proxy_uid,
                inbound_port,
                outbound_port,
                skip_inbound_ports,
                skip_outbound_ports,
                skip_outbound_cidrs,
            });
            // clap makes --proxy-uid required unless --remove, so `None` means removal.
            run_redirect(rules.filter(|_| !remove), config.as_deref(), dry_run)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("switchyard: {err:#}");
            ExitCode::FAILURE
        }
    }
}

impl From<CliLogFormat> for LogFormat {
    fn from(format: CliLogFormat) -> Self {
        match format {
            CliLogFormat::Text => LogFormat::Text,
            CliLogFormat::Json => LogFormat::Json,
        }
    }
}

fn load(path: &Path) -> anyhow::Result<Config> {
    // The errors already read `FILE:LINE:COL: message`, one per line; print them as they are.
    config::load(path).map_err(|errors| anyhow::anyhow!("invalid config\n{errors}"))
}

fn run(path: &Path, log_format: Option<CliLogFormat>) -> anyhow::Result<()> {
    let config = load(path)?;
    init_logging(log_format.map_or(config.log.format, Into::into));
    // Certificates that do not load stop the start here, with the file named.
    switchyard::tls::store::preload(&config).context("TLS")?;
    switchyard::runtime::run(config)
}

fn run_redirect(
    rules: Option<redirect::RuleArgs>,
    config: Option<&Path>,
    dry_run: bool,
) -> anyhow::Result<()> {
    let script = match &rules {
        Some(args) => {
            let ports = match config {
                Some(path) => redirect::ConfigPorts::from_config(&load(path)?),
                None => redirect::ConfigPorts::default(),
            };
            redirect::Rules::new(args, &ports)
                .map_err(anyhow::Error::msg)?
                .script()
        }
        None => redirect::remove_script(),
    };
    if dry_run {
        print!("{script}");
        return Ok(());
    }
    redirect::nft::apply(&script)?;
    match rules {
        Some(_) => println!(
            "switchyard redirect: table inet {} applied",
            redirect::TABLE
        ),
        None => println!(
            "switchyard redirect: table inet {} removed",
            redirect::TABLE
        ),
    }
    Ok(())
}

fn certs(action: CertsAction) -> anyhow::Result<()> {
    use switchyard::tls::certs_cli;
    let written = match action {
        CertsAction::Init { dir, days } => certs_cli::init(&dir, days)?,
        CertsAction::Issue {
            ca,
            name,
            spiffe,
            dns,
            ip,
            out,
            days,
        } => certs_cli::issue(&certs_cli::IssueOptions {
            ca_dir: ca,
            name,
            spiffe,
            dns,
            ips: ip,
            out,
            days,
        })?,
    };
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn check(path: &Path, running: Option<&Path>) -> ExitCode {
    match (config::load(path), running.map(config::load)) {
        (Ok(config), None) => {
            print!("{}", config.summary());
            ExitCode::SUCCESS
        }
        (Ok(config), Some(Ok(running))) => {
            print!("{}", config::diff::diff(&running, &config));
            ExitCode::SUCCESS
        }
        (Ok(_), Some(Err(errors))) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
        (Err(errors), _) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

fn explain(
    path: &Path,
    request: &str,
    header_args: &[String],
    listener: Option<&str>,
) -> anyhow::Result<()> {
    let config = load(path)?;
    let (method, target) = request
        .trim()
        .split_once(char::is_whitespace)
        .context("the request must read 'METHOD URL', e.g. 'GET http://host/path'")?;
    let method: http::Method = method.parse().context("invalid method")?;
    let uri: http::Uri = target.trim().parse().context("invalid URL")?;
    let mut headers = http::HeaderMap::new();
    for line in header_args {
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("header {line:?} must read 'name: value'"))?;
        let name: http::HeaderName = name.trim().parse().context("invalid header name")?;
        headers.append(name, value.trim().parse().context("invalid header value")?);
    }
    let host = uri.authority().map(|a| a.as_str().to_owned()).or_else(|| {
        headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
    });
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let view = RequestView {
        method: &method,
        host: host.as_deref(),
        path_and_query,
        headers: &headers,
        client_identity: None,
    };
    let router = Router::new(&config);
    let mut explanation = router.explain(&config, listener, &view);
    // The endpoint a hashing cluster maps the key to comes from the balancer tables a snapshot
    // of this config holds, exactly as the running proxy would build them.
    let config = std::sync::Arc::new(config);
    let snapshot = Snapshot::build(std::sync::Arc::clone(&config), &EndpointRegistry::new(), 0);
    switchyard::admin::explain::fill_hashed_endpoints(&mut explanation, &snapshot, &view, None);
    print!("{explanation}");
    Ok(())
}

fn register(registration: switchyard::discovery::register::Registration) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        #[cfg(unix)]
        let shutdown = {
            use tokio::signal::unix::{signal, SignalKind};
            let mut interrupt = signal(SignalKind::interrupt())?;
            let mut terminate = signal(SignalKind::terminate())?;
            async move {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            }
        };
        #[cfg(not(unix))]
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        switchyard::discovery::register::run(registration, shutdown).await?;
        Ok(())
    })
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: escape codes in a log file or pipe are noise to every reader.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        // Flat objects: an access-log line's fields sit at the top level, next to `message`.
        LogFormat::Json => builder.json().flatten_event(true).init(),
        // Values escaped so that a client's bytes cannot add fields or lines (log_text).
        LogFormat::Text => builder
            .fmt_fields(switchyard::proxy::log_text::TextFields)
            .init(),
    }
}
