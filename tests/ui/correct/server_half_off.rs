//! Issue 9: `server_feature` hands the server half to the crate's own feature. With the feature
//! off, the handler body is not compiled (it names a crate that does not exist here) and the
//! route is not registered, while its typed stubs work. Mounting the crate's routes then fails
//! the server's build with a message that says why: routes never vanish silently.
#![allow(unexpected_cfgs)] // the fixture's feature is deliberately not declared: it is never on

#[webmesh::route("/greet", server_feature = "fixture-server-half")]
pub async fn greet(name: String, conn: &webmesh::Connection) -> Result<String, String> {
    ::crate_that_is_not_linked_in_client_builds::greet(name, conn.id())
}

webmesh::routes!();

async fn caller(client: &webmesh::Client) -> Result<String, webmesh::CallError<String>> {
    greet::call(client, "Ada".to_owned()).await
}

fn main() {
    let _ = caller;
    assert!(routes().is_empty(), "no server half: nothing registered");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let built = runtime.block_on(
        webmesh::Server::builder()
            .bind("127.0.0.1:0")
            .routes(routes())
            .build(),
    );
    match built {
        Err(webmesh::Error::Config(message)) => {
            assert!(message.contains("routes()` has no route to serve"), "{message}");
            assert!(message.contains("server_feature"), "{message}");
        }
        other => panic!("mounting a contract without its server half must fail: {other:?}"),
    }
}
