// A topic's messages have its declared type: publishing a `String` on `OrderCreated` does not
// compile.

#[derive(serde::Serialize, serde::Deserialize)]
#[webmesh::topic("/orders/created")]
pub struct OrderCreated {
    pub id: u64,
}

fn publish(topics: &webmesh::Topics) {
    let _ = topics.publish::<OrderCreated>(&"order 7".to_string());
}

fn main() {
    let _ = publish;
}
