// A `*` stands for a whole segment of a topic's path; a push has no patterns at all.

#[derive(serde::Serialize, serde::Deserialize)]
#[webmesh::topic("/prices/eur*")]
pub struct Price(pub f64);

#[derive(serde::Serialize, serde::Deserialize)]
#[webmesh::push("/prices/*")]
pub struct PriceAlert(pub f64);

fn main() {}
