//! `webmesh serve`: a mock server for testing clients.

use std::collections::BTreeMap;
use std::sync::Arc;

use clap::Args;
use rmpv::Value;
use webmesh::{CallContext, Server};

use crate::output::{self, Failure};

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// The address to listen on (port 0 picks a free one; the URL is printed on stderr).
    #[arg(long, default_value = "127.0.0.1:4269")]
    pub(crate) bind: String,
    /// Answer every path with what it was sent.
    #[arg(long)]
    pub(crate) echo: bool,
    /// A JSON file mapping paths to fixed replies: `{"/add": 42, "/user": {"name": "Ada"}}`.
    /// With `--echo`, other paths echo.
    #[arg(long, value_name = "FILE")]
    pub(crate) routes: Option<std::path::PathBuf>,
    /// Do not log calls on stdout.
    #[arg(long, short)]
    pub(crate) quiet: bool,
}

pub(crate) async fn serve(args: &ServeArgs) -> Result<(), Failure> {
    if !args.echo && args.routes.is_none() {
        return Err(Failure::bad_input(
            "nothing to serve: give --echo, --routes FILE, or both",
        ));
    }
    let fixed = match &args.routes {
        Some(path) => load(path)?,
        None => BTreeMap::new(),
    };
    let quiet = args.quiet;
    let mut builder = Server::builder().bind(args.bind.clone());
    for (path, reply) in fixed {
        let reply = Arc::new(reply);
        builder = builder.on(path, move |v: Value, call: CallContext| {
            log(quiet, &call, &v);
            let reply = reply.clone();
            async move { (*reply).clone() }
        });
    }
    if args.echo {
        builder = builder.fallback(move |v: Value, call: CallContext| {
            log(quiet, &call, &v);
            async move { v }
        });
    }
    let server = builder.build().await?;
    output::eprint_line(&format!(
        "webmesh serve: listening on ws://{}",
        server.local_addr()
    ));
    let handle = server.spawn();
    let _ = tokio::signal::ctrl_c().await;
    handle.shutdown().await;
    Ok(())
}

fn load(path: &std::path::Path) -> Result<BTreeMap<String, Value>, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::bad_input(format!("--routes {}: {e}", path.display())))?;
    let value = crate::lossless::parse(&text)
        .map_err(|e| Failure::bad_input(format!("--routes {}: invalid JSON: {e}", path.display())))?;
    let Value::Map(entries) = value else {
        return Err(Failure::bad_input(format!(
            "--routes {}: expected an object of path to reply",
            path.display()
        )));
    };
    let mut out = BTreeMap::new();
    for (k, v) in entries {
        let path = k.as_str().filter(|p| p.starts_with('/')).ok_or_else(|| {
            Failure::bad_input(format!("--routes: a key is not a path starting with '/': {k}"))
        })?;
        out.insert(path.to_owned(), v);
    }
    Ok(out)
}

/// One JSON line per call on stdout.
fn log(quiet: bool, call: &CallContext, data: &Value) {
    if quiet {
        return;
    }
    let line = Value::Map(vec![
        ("conn".into(), call.connection().id().into()),
        ("path".into(), call.path().into()),
        ("call".into(), call.expects_answer().into()),
        ("data".into(), data.clone()),
    ]);
    output::print_line(&output::json_text(&line, false));
}
