struct Service;

impl Service {
    #[webmesh::route("/echo")]
    fn echo(&self, x: u8) -> u8 {
        x
    }
}

fn main() {}
