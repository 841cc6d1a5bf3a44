// A subscription yields its topic's type: reading it as another type does not compile.

use futures_util::StreamExt;

#[derive(serde::Serialize, serde::Deserialize)]
#[webmesh::topic("/orders/created")]
pub struct OrderCreated {
    pub id: u64,
}

async fn read(client: webmesh::Client) {
    let mut orders = client.subscribe::<OrderCreated>().await.unwrap();
    if let Some(webmesh::Event::Message { value, .. }) = orders.next().await {
        let text: String = value;
        let _ = text;
    }
}

fn main() {
    let _ = read;
}
