//! Link options for the weftd binary.
//!
//! `-z pack-relative-relocs` writes the position-independent binary's ~20,000 relative
//! relocations as a compact bitmap (DT_RELR) instead of 24-byte RELA records: the start-up
//! code (glibc's, linked in statically: `.cargo/config.toml`) reads every record, so the
//! records were ~480 kB of weftd's resident memory for as long as it runs (BENCHMARKS.md,
//! "Dual-stack memory, stop 14"). The relocations themselves, and so the relocation model
//! (PIE), are unchanged.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // RUSTFLAGS (or CARGO_ENCODED_RUSTFLAGS) replace .cargo/config.toml's flags, and `cargo
    // install --git` never reads it: the build then links dynamically, and the packed
    // relocations need glibc 2.36 or later where weftd runs.
    let features = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
    let gnu = std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if gnu && !features.split(',').any(|f| f == "crt-static") {
        println!("cargo:warning=weftd is linked dynamically (RUSTFLAGS replaced .cargo/config.toml's -C target-feature=+crt-static): it needs glibc 2.36 or later where it runs");
    }
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
