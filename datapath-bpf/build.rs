//! Compiles the BPF programs under `bpf/` with clang (one object per entry point) and generates the
//! C layout table the `layout` test checks the Rust map mirrors against.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const PROGRAMS: &[&str] = &["xdp_lb", "tc_lb", "tc_decap", "xdp_pass", "xdp_gen", "tc_overlay", "tc_svc"];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let bpf = manifest.join("bpf");
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-env-changed=HALYARD_CLANG");

    let clang = find_clang();
    for prog in PROGRAMS {
        let src = bpf.join(format!("{prog}.bpf.c"));
        let obj = out.join(format!("{prog}.bpf.o"));
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
            .arg(format!("-I{}", bpf.join("include").display()))
            .arg("-I/usr/include/x86_64-linux-gnu")
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .status()
            .unwrap_or_else(|e| fail(&format!("could not run {clang}: {e}")));
        if !status.success() {
            fail(&format!("{clang} failed to compile {}", src.display()));
        }
    }
    layout(&bpf, &out);
}

/// clang-19 (the tested version), then plain clang; HALYARD_CLANG overrides both.
fn find_clang() -> String {
    let candidates: Vec<String> = match env::var("HALYARD_CLANG") {
        Ok(c) => vec![c],
        Err(_) => vec!["clang-19".into(), "clang".into()],
    };
    for c in &candidates {
        if let Ok(o) = Command::new(c).arg("--version").output()
            && o.status.success()
        {
            return c.clone();
        }
    }
    fail(&format!(
        "no C compiler for BPF found (tried {}). Install it with `apt-get install clang-19 libbpf-dev` \
         (scripts/test.sh does this), or point HALYARD_CLANG at a clang >= 14.",
        candidates.join(", ")
    ))
}

/// Builds and runs bpf/layout.c on the host; its output is the C side of the layout test.
fn layout(bpf: &Path, out: &Path) {
    let exe = out.join("layout");
    let cc = env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .arg(format!("-I{}", bpf.join("include").display()))
        .arg(bpf.join("layout.c"))
        .arg("-o")
        .arg(&exe)
        .status()
        .unwrap_or_else(|e| fail(&format!("could not run {cc}: {e}")));
    if !status.success() {
        fail("could not compile bpf/layout.c for the host");
    }
    let output = Command::new(&exe).output().unwrap_or_else(|e| fail(&format!("could not run {}: {e}", exe.display())));
    std::fs::write(out.join("c_layout.rs"), output.stdout).unwrap();
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    panic!("{msg}");
}
