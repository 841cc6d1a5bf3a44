//! How results and errors are printed: JSON on stdout (indented on a terminal, one stable line
//! when piped), messages on stderr (colored on a terminal), and the exit codes.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use rmpv::Value;

use crate::lossless::Lossless;

/// The documented exit codes (0 is success).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// 1: the remote handler returned an error (its value is on stderr).
    Handler = 1,
    /// 2: bad input: arguments, JSON, a frame, a file.
    BadInput = 2,
    /// 3: the connection failed or was lost (refused, TLS, handshake, closed).
    Connection = 3,
    /// 4: timed out (connecting, or waiting for a reply).
    Timeout = 4,
    /// 5: no route (or topic) at that path.
    NotFound = 5,
    /// 6: another remote error (forbidden, bad_request, internal, unsupported, ...).
    Remote = 6,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// What `--help` says about exit codes.
pub(crate) const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the remote handler returned an error (printed on stderr as JSON)
  2  bad input: arguments, JSON, a frame or a file
  3  connection failed or lost (refused, TLS, handshake, closed)
  4  timeout (connecting, or waiting for a reply)
  5  not found: no route at that path
  6  another remote error (forbidden, bad_request, internal, unsupported, ...)";

/// A failure: what to print and how to exit.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) exit: Exit,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(exit: Exit, message: impl Into<String>) -> Self {
        Failure {
            exit,
            message: message.into(),
        }
    }

    pub(crate) fn bad_input(message: impl Into<String>) -> Self {
        Failure::new(Exit::BadInput, message)
    }
}

/// The exit code and message of a library error.
impl From<webmesh::Error> for Failure {
    fn from(e: webmesh::Error) -> Self {
        use webmesh::Error as E;
        let exit = match &e {
            E::CallTimeout { .. } | E::ConnectTimeout { .. } => Exit::Timeout,
            E::Remote { code, .. } if code == webmesh::codec::code::NOT_FOUND => Exit::NotFound,
            E::Remote { code, .. } if code == webmesh::codec::code::HANDLER => Exit::Handler,
            E::Remote { .. } => Exit::Remote,
            E::InvalidUrl { .. } | E::Config(_) | E::TlsConfig(_) => Exit::BadInput,
            E::Codec(_) => Exit::Remote,
            _ => Exit::Connection,
        };
        let message = match &e {
            E::Remote { code, message } => format!("remote error {code}: {message}"),
            other => other.to_string(),
        };
        Failure { exit, message }
    }
}

/// Whether stdout / stderr are terminals (then: indented JSON, colors).
pub(crate) fn stdout_is_tty() -> bool {
    std::io::stdout().is_terminal()
}

fn stderr_colored() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// `text` in bold `color` (an ANSI code) on a terminal, plain otherwise.
pub(crate) fn paint(text: &str, color: &str) -> String {
    if stderr_colored() {
        format!("\x1b[1;{color}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// Prints `error: message` on stderr.
pub(crate) fn error(message: &str) {
    let _ = writeln!(std::io::stderr(), "{} {message}", paint("error:", "31"));
}

/// Prints `warning: message` on stderr.
pub(crate) fn warn(message: &str) {
    let _ = writeln!(std::io::stderr(), "{} {message}", paint("warning:", "33"));
}

/// A value as one line of JSON with `", "` and `": "` separators (as Python's `json.dumps`),
/// or indented when `pretty`.
pub(crate) fn json_text(value: &Value, pretty: bool) -> String {
    if pretty {
        return crate::lossless::to_string(value, true);
    }
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, Spaced);
    let _ = serde::Serialize::serialize(&Lossless(value), &mut ser);
    String::from_utf8(out).unwrap_or_default()
}

/// Prints a value on stdout: indented on a terminal, one line when piped.
pub(crate) fn print_value(value: &Value) {
    let text = json_text(value, stdout_is_tty());
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// Prints one line on stdout and flushes it (for streams read line by line).
pub(crate) fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Prints one line on stderr.
pub(crate) fn eprint_line(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// serde_json's compact output with a space after `,` and `:`.
struct Spaced;

impl serde_json::ser::Formatter for Spaced {
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_json_is_spaced_like_python() {
        let v = crate::lossless::parse(r#"{"path":"/echo","data":[1,{"a":null}]}"#).unwrap();
        assert_eq!(
            json_text(&v, false),
            r#"{"path": "/echo", "data": [1, {"a": null}]}"#
        );
    }
}
