//! Embeds the packed kernel named by `KERNEL_PAYLOAD` (set by `cargo xtask build`).
//! Without it (a plain `cargo check`), an empty payload is embedded and the stage reports that
//! at boot instead of failing to compile. Also keeps the IGVM entry symbol in the link.
fn main() {
    // The IGVM entry is referenced by no code, only by the IGVM file xtask builds from the
    // symbol table: keep the linker's section GC from dropping it.
    println!("cargo:rustc-link-arg-bins=-Wl,--undefined=_start_igvm");
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
