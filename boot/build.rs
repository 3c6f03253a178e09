//! Embeds the packed kernel named by `KERNEL_PAYLOAD` (set by `cargo xtask build`).
//! Without it (a plain `cargo check`), an empty payload is embedded and the stage reports that
//! at boot instead of failing to compile.
fn main() {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("kernel.payload");
    println!("cargo:rerun-if-env-changed=KERNEL_PAYLOAD");
    match std::env::var("KERNEL_PAYLOAD") {
        Ok(path) => {
            println!("cargo:rerun-if-changed={path}");
            std::fs::copy(&path, &out).unwrap_or_else(|e| panic!("KERNEL_PAYLOAD={path}: {e}"));
        }
        Err(_) => std::fs::write(&out, []).unwrap(),
    }
}
