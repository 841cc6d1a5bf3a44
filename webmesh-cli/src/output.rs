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
        if std::env::var_os("NO_COLOR").is_none() {
            return colored(&Lossless(value));
        }
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

/// Indented JSON with ANSI colors: keys blue, strings green, numbers cyan, literals yellow.
pub(crate) fn colored<T: serde::Serialize + ?Sized>(value: &T) -> String {
    let mut out = Vec::new();
    let fmt = Colored {
        pretty: serde_json::ser::PrettyFormatter::new(),
        key: false,
    };
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    let _ = value.serialize(&mut ser);
    String::from_utf8(out).unwrap_or_default()
}

const RESET: &[u8] = b"\x1b[0m";

struct Colored {
    pretty: serde_json::ser::PrettyFormatter<'static>,
    /// Inside an object key.
    key: bool,
}

/// `color`, then what `write` writes, then a reset.
fn painted<W: ?Sized + Write>(
    w: &mut W,
    color: &[u8],
    write: impl FnOnce(&mut W) -> std::io::Result<()>,
) -> std::io::Result<()> {
    w.write_all(color)?;
    write(w)?;
    w.write_all(RESET)
}

impl serde_json::ser::Formatter for Colored {
    fn write_null<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        painted(w, b"\x1b[33m", |w| w.write_all(b"null"))
    }

    fn write_bool<W: ?Sized + Write>(&mut self, w: &mut W, v: bool) -> std::io::Result<()> {
        painted(w, b"\x1b[33m", |w| {
            w.write_all(if v { b"true" } else { b"false" })
        })
    }

    fn write_i8<W: ?Sized + Write>(&mut self, w: &mut W, v: i8) -> std::io::Result<()> {
        painted(w, b"\x1b[36m", |w| write!(w, "{v}"))
    }

    fn write_i64<W: ?Sized + Write>(&mut self, w: &mut W, v: i64) -> std::io::Result<()> {
        painted(w, b"\x1b[36m", |w| write!(w, "{v}"))
    }

    fn write_u64<W: ?Sized + Write>(&mut self, w: &mut W, v: u64) -> std::io::Result<()> {
        painted(w, b"\x1b[36m", |w| write!(w, "{v}"))
    }

    fn write_f64<W: ?Sized + Write>(&mut self, w: &mut W, v: f64) -> std::io::Result<()> {
        painted(w, b"\x1b[36m", |w| {
            serde_json::ser::CompactFormatter.write_f64(w, v)
        })
    }

    fn begin_string<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(if self.key { b"\x1b[34m\"" } else { b"\x1b[32m\"" })
    }

    fn end_string<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(b"\"")?;
        w.write_all(RESET)
    }

    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.pretty.begin_array(w)
    }

    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.pretty.end_array(w)
    }

    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        self.pretty.begin_array_value(w, first)
    }

    fn end_array_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.pretty.end_array_value(w)
    }

    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.pretty.begin_object(w)
    }

    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.pretty.end_object(w)
    }

    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        self.key = true;
        self.pretty.begin_object_key(w, first)
    }

    fn end_object_key<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.key = false;
        self.pretty.end_object_key(w)
    }

    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.pretty.begin_object_value(w)
    }

    fn end_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.pretty.end_object_value(w)
    }
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

    #[test]
    fn colored_json_is_the_same_json_once_the_colors_are_removed() {
        let v =
            crate::lossless::parse(r#"{"k": [1, -2.5, true, null, "s"], "b": {"$bin": "AA=="}}"#).unwrap();
        let painted = colored(&Lossless(&v));
        assert!(painted.contains("\x1b[34m\"k\"\x1b[0m"), "{painted}");
        let mut plain = String::new();
        let mut rest = painted.as_str();
        while let Some(at) = rest.find('\x1b') {
            plain.push_str(&rest[..at]);
            rest = &rest[at..];
            rest = &rest[rest.find('m').map_or(rest.len(), |m| m + 1)..];
        }
        plain.push_str(rest);
        assert_eq!(plain, crate::lossless::to_string(&v, true));
    }
}
