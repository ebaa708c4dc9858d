//! Compiles the eBPF programs under `bpf/` with clang (`-target bpf -O2
//! -g`: BTF for the maps, which aya reads) into `OUT_DIR`.
//!
//! Without clang (or without the libbpf headers) the crate still builds:
//! the object is left empty, `cargo` prints a warning naming the Debian
//! packages to install, and `SocketLb::attach` fails with
//! `EbpfError::NotBuilt` carrying the same message. With
//! `RVS_REQUIRE_PRIVILEGED=1` (CI) a missing compiler fails the build.
//! `RVS_CLANG` names another clang binary. Installing clang later makes
//! the next build compile them (the script watches where they would be).

#![allow(clippy::print_stdout)] // cargo reads a build script's stdout

use std::path::PathBuf;
use std::process::Command;

const SOURCES: [&str; 2] = ["socket_lb", "rebalance"];

fn main() {
    println!("cargo:rerun-if-env-changed=RVS_CLANG");
    println!("cargo:rerun-if-env-changed=RVS_REQUIRE_PRIVILEGED");
    println!("cargo:rustc-check-cfg=cfg(rvs_ebpf_missing)");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let clang = std::env::var("RVS_CLANG").unwrap_or_else(|_| "clang".into());
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        other => other,
    };
    // Included by both programs.
    println!("cargo:rerun-if-changed=bpf/flow.h");
    let mut failure = None;
    for name in SOURCES {
        let src = PathBuf::from("bpf").join(format!("{name}.c"));
        println!("cargo:rerun-if-changed={}", src.display());
        let obj = out.join(format!("{name}.o"));
        let result = Command::new(&clang)
            .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
            .arg(format!("-I/usr/include/{multiarch}"))
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .output();
        let why = match result {
            Ok(output) if output.status.success() => continue,
            Ok(output) => format!(
                "`{clang} -target bpf` failed on {}: {}",
                src.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(err) => format!("cannot run `{clang}`: {err}"),
        };
        // Leave an empty object so `include_bytes!` still finds a file.
        let _ = std::fs::write(&obj, b"");
        failure = Some(why);
    }
    if let Some(why) = failure {
        let msg = format!(
            "rvs-ebpf: eBPF programs not built ({why}); install Debian's clang and libbpf-dev \
             (scripts/test.sh does) to use the eBPF dataplane"
        );
        if std::env::var("RVS_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1") {
            panic!("{msg}");
        }
        // Build again once the compiler and headers are installed: a path
        // that does not exist makes cargo rerun this script every build,
        // which costs nothing here while they are missing.
        let at = if clang.contains('/') {
            clang.clone()
        } else {
            format!("/usr/bin/{clang}")
        };
        println!("cargo:rerun-if-changed={at}");
        println!("cargo:rerun-if-changed=/usr/include/bpf/bpf_helpers.h");
        println!("cargo:warning={msg}");
        println!("cargo:rustc-env=RVS_EBPF_MISSING={msg}");
        println!("cargo:rustc-cfg=rvs_ebpf_missing");
    }
}
