// Subscribing to a type that is not a declared topic does not compile.

#[derive(serde::Serialize, serde::Deserialize)]
pub struct NotATopic {
    pub id: u64,
}

async fn subscribe(client: webmesh::Client) {
    let _ = client.subscribe::<NotATopic>().await;
}

fn main() {
    let _ = subscribe;
}
