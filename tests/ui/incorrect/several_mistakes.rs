// Independent mistakes are all reported in one pass.
#[webmesh::route("no-slash", retries = 3)]
fn broken<T>(a: T, b: T) -> T {
    a
}

fn main() {}
