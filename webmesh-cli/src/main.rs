//! `webmesh`: call, emit, subscribe, describe, decode and encode frames, mock and load-test any
//! webmesh service, Rust or Python 0.1.2. JSON in, JSON out (see `lossless` for what JSON lacks).
//!
//! Run `webmesh --help`; the repository's README has examples.

mod bench;
mod conn;
mod frames;
mod lossless;
mod output;
mod serve;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use futures_util::StreamExt;
use rmpv::Value;
use webmesh::{CallError, Event, Framing, SubscribeOptions};

use conn::ConnectArgs;
use output::{Exit, Failure};

/// Call, emit, subscribe and inspect webmesh services from a shell, Rust or Python 0.1.2.
///
/// JSON in, JSON out. msgpack values that JSON lacks have a lossless JSON form: {"$bin":
/// "<base64>"}, {"$ext": [type, "<base64>"]}, {"$int": "<digits>"} beyond 2^53, {"$float":
/// "NaN"}, {"$map": [[key, value], ...]} for keys that are not strings.
#[derive(Debug, Parser)]
#[command(name = "webmesh", version, after_help = output::EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Call PATH and print the reply as JSON.
    ///
    /// Example: webmesh call ws://127.0.0.1:4269 /add '{"a":2,"b":40}'
    #[command(after_help = output::EXIT_CODES)]
    Call(SendArgs),
    /// Send to PATH without waiting for a reply.
    #[command(after_help = output::EXIT_CODES)]
    Emit(SendArgs),
    /// Print the messages of a topic, one JSON line each (lag and gap notices on stderr).
    #[command(after_help = output::EXIT_CODES)]
    Subscribe(SubscribeArgs),
    /// List what a server serves: routes, their docs and JSON Schemas, and topics.
    #[command(after_help = output::EXIT_CODES)]
    Routes(RoutesArgs),
    /// Print TypeScript for a server's routes and topics (from its introspection route), for
    /// the `webmesh-client` package: `webmesh typescript URL > src/api.ts`.
    #[command(after_help = output::EXIT_CODES)]
    Typescript(TypescriptArgs),
    /// Turn a captured frame into JSON: a 0.1.2 text frame (hex or JSON), or a v1 frame as hex
    /// or base64.
    ///
    /// Example: webmesh decode 789c6b5a52905892b1543f3539237f494a6249e2a28c4c005f7708f8
    #[command(after_help = output::EXIT_CODES)]
    Decode(frames::DecodeArgs),
    /// Turn a path and JSON data into a frame (v1 as hex, or a 0.1.2 text frame with --legacy).
    #[command(after_help = output::EXIT_CODES)]
    Encode(frames::EncodeArgs),
    /// Run a mock server that echoes, or answers fixed JSON per path, and logs each call as a
    /// JSON line.
    Serve(serve::ServeArgs),
    /// Load-test a route: calls/s, a latency histogram, errors by kind, bytes on the wire.
    #[command(after_help = output::EXIT_CODES)]
    Bench(bench::BenchArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// What `call` and `emit` take.
#[derive(Debug, clap::Args)]
struct SendArgs {
    #[command(flatten)]
    conn: ConnectArgs,
    /// The path, like /add.
    path: String,
    /// The data, as JSON; `-` reads stdin; nothing sends null.
    #[arg(value_name = "JSON", allow_hyphen_values = true)]
    payload: Option<String>,
}

#[derive(Debug, clap::Args)]
struct SubscribeArgs {
    #[command(flatten)]
    conn: ConnectArgs,
    /// The topic's path, or a pattern with `*` segments, like /prices/*.
    topic: String,
    /// Exit after this many messages.
    #[arg(long, short = 'n')]
    count: Option<u64>,
    /// Reconnect when the connection drops, resubscribing from the last message seen.
    #[arg(long)]
    reconnect: bool,
}

#[derive(Debug, clap::Args)]
struct TypescriptArgs {
    #[command(flatten)]
    conn: ConnectArgs,
    /// The module the generated code imports `route` and `topic` from.
    #[arg(long = "import", default_value = "webmesh-client", value_name = "MODULE")]
    import_from: String,
}

#[derive(Debug, clap::Args)]
struct RoutesArgs {
    #[command(flatten)]
    conn: ConnectArgs,
    /// Print the whole description (with the JSON Schemas) as JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            output::error(&f.message);
            f.exit.into()
        }
    }
}

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Decode(args) => {
            output::print_value(&frames::decode(&args)?);
            Ok(())
        }
        Command::Encode(args) => {
            output::print_line(&frames::encode(&args)?);
            Ok(())
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "webmesh", &mut std::io::stdout());
            Ok(())
        }
        networked => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| Failure::new(Exit::Connection, format!("cannot start the runtime: {e}")))?;
            rt.block_on(run_async(networked))
        }
    }
}

async fn run_async(command: Command) -> Result<(), Failure> {
    match command {
        Command::Call(args) => call(&args).await,
        Command::Emit(args) => emit(&args).await,
        Command::Subscribe(args) => subscribe(&args).await,
        Command::Routes(args) => routes(&args).await,
        Command::Typescript(args) => {
            let d = describe(&args.conn).await?;
            output::print_line(d.to_typescript(&args.import_from).trim_end());
            Ok(())
        }
        Command::Serve(args) => serve::serve(&args).await,
        Command::Bench(args) => bench::bench(&args).await,
        Command::Decode(_) | Command::Encode(_) | Command::Completions { .. } => Ok(()),
    }
}

async fn call(args: &SendArgs) -> Result<(), Failure> {
    let request = conn::read_json(args.payload.as_deref())?;
    let client = args.conn.connect().await?;
    let timeout = args.conn.timeout()?;
    let result = client
        .call_path_as::<Value, Value>(&args.path, &request, Some(timeout))
        .await;
    let legacy = client.framing() == Framing::Legacy;
    client.close().await;
    match result {
        // 0.1.2 answers a path without a callback with this string, as a reply.
        Ok(Value::String(s)) if legacy && s.as_str() == Some("Path not found") => Err(Failure::new(
            Exit::NotFound,
            format!(
                "Path not found: {} (the 0.1.2 server has no callback there)",
                args.path
            ),
        )),
        Ok(reply) => {
            output::print_value(&reply);
            Ok(())
        }
        Err(CallError::Handler(e)) => Err(Failure::new(
            Exit::Handler,
            format!(
                "{} returned an error (code handler): {}",
                args.path,
                output::json_text(&e, false)
            ),
        )),
        Err(CallError::Rpc(webmesh::Error::CallTimeout { path, after })) if legacy => Err(Failure::new(
            Exit::Timeout,
            format!(
                "no reply from {path} within {after:?}. This is a webmesh 0.1.2 server: a \
                 callback that returns None sends no reply at all (use `webmesh emit` for it)"
            ),
        )),
        Err(CallError::Rpc(e)) => Err(e.into()),
        Err(other) => Err(Failure::new(Exit::Remote, format!("{other}"))),
    }
}

async fn emit(args: &SendArgs) -> Result<(), Failure> {
    let data = conn::read_json(args.payload.as_deref())?;
    let client = args.conn.connect().await?;
    client.emit_path(&args.path, &data).await?;
    // Closing waits for the server's close answer: the message went out before it.
    client.close().await;
    Ok(())
}

async fn subscribe(args: &SubscribeArgs) -> Result<(), Failure> {
    let mut builder = args.conn.builder()?;
    if args.reconnect {
        builder = builder.reconnect(webmesh::Reconnect::default());
    }
    let client = builder.connect(&args.conn.url).await?;
    if client.framing() == Framing::Legacy {
        return Err(Failure::new(
            Exit::Remote,
            "this is a webmesh 0.1.2 server: it has no topics",
        ));
    }
    let mut sub = client
        .subscribe_untyped(&args.topic, SubscribeOptions::default())
        .await?;
    let mut seen = 0u64;
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        if args.count.is_some_and(|n| seen >= n) {
            break;
        }
        let event = tokio::select! {
            e = sub.next() => e,
            _ = &mut stop => break,
        };
        match event {
            Some(Event::Message { path, seq, value }) => {
                seen += 1;
                let line = Value::Map(vec![
                    ("path".into(), path.into()),
                    ("seq".into(), seq.into()),
                    ("data".into(), value),
                ]);
                output::print_line(&output::json_text(&line, false));
            }
            Some(Event::Lagged { path, missed }) => {
                output::warn(&format!("lagged: {missed} message(s) on {path} were dropped"));
            }
            Some(Event::Gap {
                path,
                missed,
                epoch_changed,
            }) => {
                let why = if epoch_changed {
                    " (the server restarted)"
                } else {
                    ""
                };
                let missed = missed.map_or_else(|| "some".to_owned(), |n| n.to_string());
                let path = path.as_deref().unwrap_or(&args.topic);
                output::warn(&format!("gap: {missed} message(s) on {path} are lost{why}"));
            }
            Some(Event::Undecodable { path, error }) => {
                output::warn(&format!("undecodable message on {path}: {error}"));
            }
            Some(Event::Closed { reason }) => {
                return Err(Failure::new(
                    Exit::Connection,
                    format!("subscription closed: {reason}"),
                ));
            }
            Some(other) => output::warn(&format!("{other:?}")),
            None => return Err(Failure::new(Exit::Connection, "subscription ended")),
        }
    }
    drop(sub);
    client.close().await;
    Ok(())
}

/// The server's description (its introspection route).
async fn describe(conn: &ConnectArgs) -> Result<webmesh::Description, Failure> {
    let client = conn.connect().await?;
    if client.framing() == Framing::Legacy {
        return Err(Failure::new(
            Exit::NotFound,
            "this is a webmesh 0.1.2 server: it cannot list its routes",
        ));
    }
    let described = client.describe().await;
    client.close().await;
    let d = described.map_err(|e| match Failure::from(e) {
        f if f.exit == Exit::NotFound => Failure::new(
            Exit::NotFound,
            format!(
                "{}: the server does not describe itself (introspection off, or an older server)",
                f.message
            ),
        ),
        f => f,
    })?;
    Ok(d)
}

async fn routes(args: &RoutesArgs) -> Result<(), Failure> {
    let d = describe(&args.conn).await?;
    if args.json {
        let text = if output::stdout_is_tty() && std::env::var_os("NO_COLOR").is_none() {
            output::colored(&d)
        } else {
            serde_json::to_string(&d).unwrap_or_default()
        };
        output::print_line(&text);
        return Ok(());
    }
    let summary = |s: &Option<serde_json::Value>| match s {
        None => "?".to_owned(),
        Some(s) => schema_name(s),
    };
    let mut lines = Vec::new();
    for r in &d.routes {
        if r.request.is_none() && r.response.is_none() && r.error.is_none() {
            lines.push(format!("{}  (no schemas)", r.path));
        } else {
            lines.push(format!(
                "{}  {} -> {}{}",
                r.path,
                summary(&r.request),
                summary(&r.response),
                match &r.error {
                    Some(e) if e.get("not").is_some() => String::new(),
                    e => format!(" | error {}", summary(e)),
                }
            ));
        }
        if let Some(doc) = r.doc.as_deref().and_then(|d| d.lines().next()) {
            lines.push(format!("    {doc}"));
        }
    }
    if !d.topics.is_empty() {
        lines.push(String::new());
        lines.push("topics:".into());
        for t in &d.topics {
            lines.push(format!("{}  {}", t.path, summary(&t.message)));
            if let Some(doc) = t.doc.as_deref().and_then(|d| d.lines().next()) {
                lines.push(format!("    {doc}"));
            }
        }
    }
    if !d.cluster.is_empty() {
        lines.push(String::new());
        lines.push("cluster (this node first):".into());
        for n in &d.cluster {
            lines.push(format!("{}  {}", n.node, n.routes.join(" ")));
        }
    }
    for l in lines {
        output::print_line(&l);
    }
    Ok(())
}

/// A schema in a word: its title, else its type.
fn schema_name(s: &serde_json::Value) -> String {
    if let Some(t) = s.get("title").and_then(|t| t.as_str()) {
        return t.to_owned();
    }
    match s.get("type") {
        Some(serde_json::Value::String(t)) => t.clone(),
        Some(serde_json::Value::Array(ts)) => {
            ts.iter().filter_map(|t| t.as_str()).collect::<Vec<_>>().join("|")
        }
        _ => "any".into(),
    }
}
