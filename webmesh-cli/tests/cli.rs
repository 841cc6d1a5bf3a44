//! The `webmesh` binary, run as a real process against real servers on loopback: a Rust server
//! started here, the CLI's own mock server, and the Python webmesh 0.1.2 reference.

use std::io::{BufRead, BufReader};
use std::process::{Command as StdCommand, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use assert_cmd::Command;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};
use webmesh::{BlockingServer, Server};
use webmesh_tests::PyServer;

/// Two numbers to add.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Add {
    /// The first.
    pub a: i64,
    /// The second.
    pub b: i64,
}

/// Why a division failed.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub enum DivError {
    /// By zero.
    ByZero,
}

/// Adds two numbers.
#[webmesh::route("/add")]
pub fn add(msg: Add) -> i64 {
    msg.a + msg.b
}

/// Divides `a` by `b`.
#[webmesh::route("/div")]
pub fn div(msg: Add) -> Result<i64, DivError> {
    msg.a.checked_div(msg.b).ok_or(DivError::ByZero)
}

/// Answers after a while.
#[webmesh::route("/slow")]
pub async fn slow(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

static RECORDED: Mutex<Vec<Json>> = Mutex::new(Vec::new());

/// Keeps what it gets.
#[webmesh::route("/record")]
pub fn record(v: Json) {
    RECORDED.lock().unwrap().push(v);
}

/// Echoes, bytes and all.
#[webmesh::route("/echo")]
pub fn echo(v: webmesh::Value) -> webmesh::Value {
    v
}

/// A price moved.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[webmesh::topic("/cli/prices/*")]
pub struct Tick {
    /// The price in cents.
    pub cents: u64,
}

fn server() -> (BlockingServer, String) {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .start_threaded()
        .expect("server starts");
    let url = format!("ws://{}", server.local_addr());
    (server, url)
}

fn webmesh() -> Command {
    let mut c = Command::cargo_bin("webmesh").expect("the webmesh binary");
    c.timeout(Duration::from_secs(60));
    c
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str]) -> Run {
    run_with_stdin(args, "")
}

fn run_with_stdin(args: &[&str], stdin: &str) -> Run {
    let out = webmesh()
        .args(args)
        .write_stdin(stdin)
        .output()
        .expect("run webmesh");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs and expects exit 0; returns stdout.
fn ok(args: &[&str]) -> String {
    let r = run(args);
    assert_eq!(r.code, 0, "webmesh {args:?}: stderr {}", r.stderr);
    r.stdout
}

fn json_of(text: &str) -> Json {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

#[test]
fn call_prints_the_reply_in_both_codecs_and_from_stdin() {
    let (_server, url) = server();
    assert_eq!(ok(&["call", &url, "/add", r#"{"a":2,"b":40}"#]), "42\n");
    assert_eq!(
        ok(&["call", &url, "/add", r#"{"a":2,"b":40}"#, "--codec", "json"]),
        "42\n"
    );
    let r = run_with_stdin(&["call", &url, "/add", "-"], r#"{"a": 1, "b": 1}"#);
    assert_eq!((r.code, r.stdout.as_str()), (0, "2\n"), "{}", r.stderr);
    // What JSON lacks travels in the lossless form, both ways.
    let v = r#"{"b": {"$bin": "AAH/"}, "big": {"$int": "18446744073709551615"}, "e": {"$ext": [5, "aGk="]}}"#;
    assert_eq!(ok(&["call", &url, "/echo", v]).trim(), v);
}

#[test]
fn failures_have_their_documented_exit_codes() {
    let (_server, url) = server();
    // 1: the handler's typed error, on stderr with its code.
    let r = run(&["call", &url, "/div", r#"{"a":1,"b":0}"#]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("handler") && r.stderr.contains(r#""ByZero""#),
        "{}",
        r.stderr
    );
    assert_eq!(r.stdout, "");
    // 2: bad input.
    let r = run(&["call", &url, "/add", "{bad"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("invalid JSON"), "{}", r.stderr);
    assert_eq!(run(&["call", &url, "/add", "--header", "no-colon"]).code, 2);
    assert_eq!(run(&["call", &url, "/add", "--timeout", "-1"]).code, 2);
    assert_eq!(run(&["call", "http://x", "/add"]).code, 2);
    assert_eq!(run(&["call"]).code, 2, "a usage error");
    // 3: nobody listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("ws://{}", closed.local_addr().unwrap());
    drop(closed);
    let r = run(&["call", &dead, "/add", "1"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("cannot connect"), "{}", r.stderr);
    // 4: no reply in time.
    let r = run(&["call", &url, "/slow", "5000", "--timeout", "0.3"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("timed out"), "{}", r.stderr);
    // 5: no such route.
    let r = run(&["call", &url, "/nope", "1"]);
    assert_eq!(r.code, 5, "{}", r.stderr);
    assert!(r.stderr.contains("not_found"), "{}", r.stderr);
    // 6: another remote error: a payload of the wrong shape.
    let r = run(&["call", &url, "/add", r#""text""#]);
    assert_eq!(r.code, 6, "{}", r.stderr);
    assert!(r.stderr.contains("bad_request"), "{}", r.stderr);
    // Nothing printed a panic or a debug dump.
    assert!(!r.stderr.contains("panicked") && !r.stderr.contains("Error {"));
}

#[test]
fn emit_sends_without_waiting() {
    let (_server, url) = server();
    assert_eq!(ok(&["emit", &url, "/record", r#"{"n": 7}"#]), "");
    for _ in 0..200 {
        if RECORDED.lock().unwrap().contains(&json!({"n": 7})) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the emit did not arrive: {:?}", RECORDED.lock().unwrap());
}

#[test]
fn subscribe_prints_one_json_line_per_message() {
    let (server, url) = server();
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("webmesh"))
        .args(["subscribe", &url, "/cli/prices/*", "--count", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let topics = server.handle().topics();
    // Publish until the subscription is in place (a message nobody took is not counted).
    let mut first = false;
    for _ in 0..1000 {
        if topics
            .publish_at("/cli/prices/acme", &Tick { cents: 100 })
            .unwrap()
            == 1
        {
            first = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(first, "the subscriber never arrived");
    topics
        .publish_at("/cli/prices/zeta", &Tick { cents: 101 })
        .unwrap();
    topics
        .publish_at("/cli/prices/acme", &Tick { cents: 102 })
        .unwrap();
    let lines: Vec<Json> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|l| json_of(&l.unwrap()))
        .collect();
    assert!(child.wait().unwrap().success());
    let cents: Vec<&Json> = lines.iter().map(|l| &l["data"]["cents"]).collect();
    assert_eq!(cents, [&json!(100), &json!(101), &json!(102)]);
    assert_eq!(lines[1]["path"], "/cli/prices/zeta");
    assert!(lines[2]["seq"].as_u64().unwrap() > lines[0]["seq"].as_u64().unwrap());
}

#[test]
fn routes_lists_paths_docs_and_schemas() {
    let (_server, url) = server();
    let human = ok(&["routes", &url]);
    assert!(
        human.contains("/add  Add -> int64\n    Adds two numbers."),
        "{human}"
    );
    assert!(human.contains("/div  Add -> int64 | error DivError"), "{human}");
    assert!(
        human.contains("/echo  ? -> ?\n"),
        "no schema for rmpv::Value: {human}"
    );
    assert!(human.contains("\ntopics:\n"), "{human}");
    assert!(
        human.contains("\n/cli/prices/*  Tick\n    A price moved.\n"),
        "{human}"
    );
    let d = json_of(&ok(&["routes", &url, "--json"]));
    let add = d["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == "/add")
        .unwrap();
    assert_eq!(add["request"]["properties"]["a"]["description"], "The first.");
    assert_eq!(add["doc"], "Adds two numbers.");
}

#[test]
fn routes_says_when_a_server_has_no_introspection() {
    let server = Server::builder()
        .introspection(false)
        .bind("127.0.0.1:0")
        .start_threaded()
        .unwrap();
    let r = run(&["routes", &format!("ws://{}", server.local_addr())]);
    assert_eq!(r.code, 5);
    assert!(r.stderr.contains("does not describe itself"), "{}", r.stderr);
}

fn vectors() -> Vec<Json> {
    let path = webmesh_tests::repo_root().join("webmesh-codec/tests/vectors/legacy-0.1.2.json");
    let v = json_of(&std::fs::read_to_string(path).unwrap());
    v["vectors"].as_array().unwrap().clone()
}

#[test]
fn decode_and_encode_round_trip_the_golden_vectors() {
    for v in vectors() {
        let name = v["name"].as_str().unwrap();
        let path = v["path"].as_str().unwrap();
        // Python's zlib, Python's plain msgpack and Python's JSON decode to the same thing.
        let zlib_text = ok(&["decode", v["msgpack_zlib"].as_str().unwrap()]);
        let zlib = json_of(&zlib_text);
        let plain = json_of(&ok(&["decode", v["msgpack_plain"].as_str().unwrap()]));
        assert_eq!(zlib, plain, "{name}");
        assert_eq!(zlib["path"], path, "{name}");
        if name != "bin" && name != "bin_empty" {
            let from_json = json_of(&ok(&["decode", v["json"].as_str().unwrap()]));
            assert_eq!(from_json["data"], zlib["data"], "{name}");
        }
        if name == "reordered_keys" || name == "missing_data" {
            continue;
        }
        // Encoding the decoded data gives Python's bytes back (uncompressed: no zlib level to
        // differ by), and the zlib form decodes to the same value.
        // The data's text as printed (key order kept: it is the order on the wire).
        let prefix = format!("{{\"path\": {}, \"data\": ", serde_json::to_string(path).unwrap());
        let data = zlib_text
            .trim()
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix('}'))
            .unwrap_or_else(|| panic!("{name}: {zlib_text}"));
        let encoded = ok(&["encode", path, data, "--legacy", "--no-zlib"]);
        assert_eq!(encoded.trim(), v["msgpack_plain"].as_str().unwrap(), "{name}");
        let ours = ok(&["encode", path, data, "--legacy"]);
        assert_eq!(json_of(&ok(&["decode", ours.trim()])), zlib, "{name}");
        // And through v1 frames, both codecs.
        let v1 = ok(&["encode", path, data, "--id", "9"]);
        let back = json_of(&ok(&["decode", v1.trim()]));
        assert_eq!(
            (&back["kind"], &back["id"], &back["data"]),
            (&json!("call"), &json!(9), &zlib["data"]),
            "{name}"
        );
        let b64 = ok(&["encode", path, data, "--base64", "--codec", "json"]);
        let back = json_of(&ok(&["decode", b64.trim(), "--codec", "json"]));
        // JSON has no bytes (serde writes them as an array of numbers).
        if !name.starts_with("bin") {
            assert_eq!(back["data"], zlib["data"], "{name}");
        }
    }
}

#[test]
fn the_issues_decode_example_prints_what_it_says() {
    assert_eq!(
        ok(&[
            "decode",
            "789c6b5a52905892b1543f3539237f494a6249e2a28c4c005f7708f8"
        ]),
        "{\"path\": \"/echo\", \"data\": \"hi\"}\n"
    );
    let r = run_with_stdin(
        &["decode"],
        "789c6b5a52905892b1543f3539237f494a6249e2a28c4c005f7708f8\n",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn bad_frames_name_the_layer_that_failed() {
    let cases = [
        ("789c6b5a52905892b1543f3539237f494a6249e2a28c4c005f7708f", "hex:"),
        (
            "789c6b5a52905892b1543f3539237f494a6249e2a28c4c005f7708f9",
            "zlib:",
        ),
        ("789c00", "zlib:"),
        ("82a470617468a52f6563686fa46461c0", "msgpack:"),
        (r#"{"path": 1, "data": 2}"#, "envelope:"),
        (r#"{"path": "/x", "data": "#, "json:"),
        ("e0", "envelope:"),
        ("not a frame!", "hex:"),
    ];
    for (frame, layer) in cases {
        let r = run(&["decode", frame]);
        assert_eq!(r.code, 2, "{frame}: {}", r.stderr);
        assert!(
            r.stderr.contains(layer),
            "{frame}: expected {layer} in {}",
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    }
    let r = run(&["encode", "/x", "{oops"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("invalid JSON"), "{}", r.stderr);
}

/// `webmesh serve` on a free port; its URL, from its first stderr line.
struct Mock {
    child: std::process::Child,
    url: String,
}

impl Mock {
    fn start(args: &[&str]) -> Mock {
        let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("webmesh"))
            .arg("serve")
            .args(["--bind", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stderr.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|u| u.starts_with("ws://"))
            .unwrap_or_else(|| panic!("serve said {line:?}"))
            .to_owned();
        Mock { child, url }
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_echoes_answers_fixed_replies_and_logs_each_call() {
    let dir = std::env::temp_dir().join(format!("webmesh-cli-serve-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("routes.json");
    std::fs::write(&file, r#"{"/user": {"name": "Ada"}, "/answer": 42}"#).unwrap();
    let mut mock = Mock::start(&["--echo", "--routes", file.to_str().unwrap()]);
    let url = mock.url.clone();
    assert_eq!(ok(&["call", &url, "/answer", "1"]), "42\n");
    assert_eq!(ok(&["call", &url, "/user"]), "{\"name\": \"Ada\"}\n");
    assert_eq!(ok(&["call", &url, "/anything", "[1, 2]"]), "[1, 2]\n");
    assert_eq!(
        ok(&["call", &url, "/anything", "[3]", "--codec", "json"]),
        "[3]\n"
    );
    let _ = mock.child.kill();
    let out = mock.child.wait_with_output_after_kill();
    let logged: Vec<Json> = out.lines().map(json_of).collect();
    let paths: Vec<&str> = logged.iter().map(|l| l["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/answer", "/user", "/anything", "/anything"]);
    assert_eq!(logged[2]["data"], json!([1, 2]));
    let r = run(&["serve"]);
    assert_eq!(r.code, 2, "nothing to serve is bad input");
}

/// The stdout of a killed child.
trait KilledOutput {
    fn wait_with_output_after_kill(&mut self) -> String;
}

impl KilledOutput for std::process::Child {
    fn wait_with_output_after_kill(&mut self) -> String {
        let _ = self.wait();
        let mut s = String::new();
        if let Some(mut out) = self.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut out, &mut s);
        }
        s
    }
}

#[test]
fn bench_runs_for_a_bounded_time_and_reports() {
    let (_server, url) = server();
    let started = std::time::Instant::now();
    let out = ok(&[
        "bench",
        &url,
        "/add",
        r#"{"a":1,"b":2}"#,
        "--duration",
        "1",
        "--conns",
        "2",
        "--in-flight",
        "4",
        "--json",
    ]);
    assert!(started.elapsed() < Duration::from_secs(30), "bounded");
    let r = json_of(&out);
    assert!(r["ok"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["errors"], json!({}));
    assert_eq!(r["calls"], r["ok"]);
    assert!(
        r["bytes_sent"].as_u64().unwrap() > r["ok"].as_u64().unwrap() * 10,
        "{r}"
    );
    assert!(r["latency_us"]["p50"].as_u64().unwrap() > 0);
    assert!(r["latency_us"]["p99_9"].as_u64() >= r["latency_us"]["p50"].as_u64());
    // Human output, and errors by kind.
    // Every call failed: the exit code says how, after the report.
    let r = run(&["bench", &url, "/div", r#"{"a":1,"b":0}"#, "--duration", "0.3"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stdout.contains(" 0 ok") && r.stdout.contains("handler:"),
        "{}",
        r.stdout
    );
    assert_eq!(run(&["bench", &url, "/add", "--conns", "0"]).code, 2);
}

#[test]
fn help_and_completions() {
    let help = ok(&["--help"]);
    assert!(help.contains("Exit codes:") && help.contains("decode"), "{help}");
    let bash = ok(&["completions", "bash"]);
    assert!(bash.contains("webmesh") && bash.contains("subscribe"));
}

// Against the real Python webmesh 0.1.2 server, in both of its codecs.

fn against_python(codec: &str) {
    let py = PyServer::start(codec);
    let url = py.url();
    let c = ["--codec", if codec == "json" { "json" } else { "msgpack" }];
    let call = |args: &[&str]| run(&[&["call", &url], args, &c].concat());
    let r = call(&["/echo", r#"{"k": [1, 2.5, "x", null]}"#]);
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "{\"k\": [1, 2.5, \"x\", null]}\n"),
        "{}",
        r.stderr
    );
    // emit, then read it back.
    assert_eq!(ok(&[&["emit", &url, "/record", "7"][..], &c].concat()), "");
    let mut recorded = String::new();
    for _ in 0..200 {
        recorded = call(&["/recorded"]).stdout;
        if recorded.contains('7') {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(recorded, "[7]\n");
    // No route: 0.1.2 answers "Path not found".
    assert_eq!(call(&["/nope", "1"]).code, 5);
    // A callback that returns None sends nothing: a timeout that says why.
    let r = call(&["/record", "8", "--timeout", "0.5"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(
        r.stderr.contains("0.1.2") && r.stderr.contains("emit"),
        "{}",
        r.stderr
    );
    // It has no topics and no introspection.
    assert_eq!(run(&[&["subscribe", &url, "/t"][..], &c].concat()).code, 6);
    assert_eq!(run(&[&["routes", &url][..], &c].concat()).code, 5);
    // A frame as Python writes it decodes.
    let script = "import sys\nfrom common import serializer\nprint(serializer(sys.argv[1]).serialize({'path': '/p', 'data': {'n': [1, None, 'é']}}))";
    let frame = webmesh_tests::expect_success(&webmesh_tests::run_python(script, &[codec], b""));
    assert_eq!(
        ok(&["decode", frame.trim()]),
        "{\"path\": \"/p\", \"data\": {\"n\": [1, null, \"é\"]}}\n"
    );
}

#[test]
fn against_python_msgpack() {
    against_python("msgpack");
}

#[test]
fn against_python_json() {
    against_python("json");
}

#[test]
fn tls_and_auth_options_reach_the_library() {
    use webmesh_tests::pki::{Ca, Usage};
    let ca = Ca::new("cli test CA");
    let id = ca.issue(&["localhost"], Usage::Server);
    let tls =
        webmesh::tls::server_config_from_pem(id.cert_pem.as_bytes(), id.key_pem.as_bytes(), None).unwrap();
    let server = Server::builder()
        .tls(tls)
        .auth(
            |req: &webmesh::UpgradeRequest| match req.bearer_token().as_deref() {
                Some("tok-ada") => Ok(String::from("ada")),
                Some(_) => Err(webmesh::Reject::forbidden("unknown token")),
                None => Err(webmesh::Reject::unauthorized("a bearer token is required")),
            },
        )
        .on("/whoami", |_: (), conn: webmesh::Connection| async move {
            conn.identity::<String>().cloned()
        })
        .bind("127.0.0.1:0")
        .start_threaded()
        .unwrap();
    let url = format!("wss://localhost:{}", server.local_addr().port());
    let dir = std::env::temp_dir().join(format!("webmesh-cli-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let ca_path = ca_file.to_str().unwrap();

    let who = ok(&[
        "call", &url, "/whoami", "--cacert", ca_path, "--bearer", "tok-ada",
    ]);
    assert_eq!(who, "\"ada\"\n");
    let who = ok(&[
        "call",
        &url,
        "/whoami",
        "--cacert",
        ca_path,
        "-H",
        "Authorization: Bearer tok-ada",
    ]);
    assert_eq!(who, "\"ada\"\n");
    // The web's roots do not know this CA.
    let r = run(&["call", &url, "/whoami", "--bearer", "tok-ada"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.to_lowercase().contains("certificate"), "{}", r.stderr);
    // --insecure connects, loudly.
    let r = run(&["call", &url, "/whoami", "--insecure", "--bearer", "tok-ada"]);
    assert_eq!((r.code, r.stdout.as_str()), (0, "\"ada\"\n"), "{}", r.stderr);
    assert!(r.stderr.contains("NOT verified"), "{}", r.stderr);
    // The upgrade's answers: 401 without a token, 403 with a bad one.
    let r = run(&["call", &url, "/whoami", "--cacert", ca_path]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("401"), "{}", r.stderr);
    let r = run(&["call", &url, "/whoami", "--cacert", ca_path, "--bearer", "nope"]);
    assert!(r.stderr.contains("403"), "{}", r.stderr);
    let r = run(&["call", &url, "/whoami", "--cacert", "/nonexistent/ca.pem"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}
