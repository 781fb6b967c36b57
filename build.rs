//! Build script: reruns only when the sources of the C surface change.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
}
