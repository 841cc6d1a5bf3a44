//! Issue 9: the generated items cannot capture the user's names. A payload type named `Route`,
//! a response named `PATH` and an error named `call` resolve to the user's types, not to the
//! generated marker, constant or stub. Unit structs named like locals of the generated server
//! half (`now`, `context`, `request`) are not captured by its patterns either.
#![allow(non_camel_case_types)]
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct Route {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PATH(pub Vec<String>);

#[derive(Debug, Serialize, Deserialize)]
pub struct call;

impl std::fmt::Display for call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no route")
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct now;

#[derive(Debug, Serialize, Deserialize)]
pub struct context;

#[derive(Debug, Serialize, Deserialize)]
pub struct request;

#[webmesh::route("/plan")]
pub fn plan(route: Route) -> Result<PATH, call> {
    Ok(PATH(vec![route.from, route.to]))
}

async fn caller(client: &webmesh::Client) {
    let r: Result<PATH, webmesh::CallError<call>> = plan::call(
        client,
        Route {
            from: "a".into(),
            to: "b".into(),
        },
    )
    .await;
    let _ = r;
    // The route's types, through the marker.
    let _: Option<<plan::Route as webmesh::Route>::Request> = Some(Route {
        from: String::new(),
        to: String::new(),
    });
    let _: &str = plan::PATH;
}

fn main() {
    let _ = caller;
}
