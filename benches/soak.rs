//! Soak test placeholder: the real command lands in the next commit.
fn main() {
    println!("soak: run it with `cargo bench --bench soak -- --minutes 10`");
}
