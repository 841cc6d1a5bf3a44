//! Every handler shape the attribute accepts compiles, with its stubs.
use serde::{Deserialize, Serialize};
use webmesh::{Connection, NoError};

#[derive(Serialize, Deserialize)]
pub struct Msg {
    pub text: String,
}

#[derive(Serialize, Deserialize)]
pub enum MsgError {
    Empty,
}

#[webmesh::route("/a")]
pub async fn a(m: Msg) -> Msg {
    m
}

#[webmesh::route("/b")]
pub fn b(m: Msg) -> Result<Msg, MsgError> {
    Ok(m)
}

#[webmesh::route("/c")]
pub async fn c() {}

#[webmesh::route("/d")]
pub fn d(_conn: &Connection) -> Option<u8> {
    None
}

#[webmesh::route("/e")]
pub async fn e(conn: Connection, n: u64) -> Result<u64, String> {
    Ok(conn.id() + n)
}

#[webmesh::route("/g")]
pub fn g(call: &webmesh::CallContext, n: u8, conn: Connection) -> String {
    format!("{} {n} {}", call.path(), conn.id())
}

#[webmesh::route("/f")]
fn private_fn_private_type(p: Private) -> Private {
    p
}

#[derive(Serialize, Deserialize)]
struct Private(u8);

async fn use_stubs(client: &webmesh::Client) {
    let _: Result<Msg, webmesh::CallError<NoError>> = a::call(client, Msg { text: String::new() }).await;
    let _: Result<Msg, webmesh::CallError<MsgError>> = b::call(client, Msg { text: String::new() }).await;
    let _: Result<(), webmesh::CallError<NoError>> = c::call(client).await;
    let _: Result<Option<u8>, _> = d::call(client).await;
    let _: Result<u64, webmesh::CallError<String>> = e::call(client, 1).await;
    let _: webmesh::Result<()> = e::emit(client, 1).await;
    let _ = private_fn_private_type::call(client, Private(1)).await;
}

fn main() {
    let _ = use_stubs;
}
