//! `veth-xdp-pass IFNAME PIN`: attaches an XDP_PASS program to the veth IFNAME (in the current
//! network namespace) and pins the link at PIN (on a bpffs). A veth only delivers the XDP_TX
//! frames of its peer when it runs native XDP itself; labs and tests put this on the bridge side
//! of an LB node's veth. Real NICs do not need it.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: veth-xdp-pass IFNAME PIN-PATH");
        return ExitCode::from(2);
    }
    match halyard_datapath::loader::attach_veth_xdp_pass(&args[1], std::path::Path::new(&args[2])) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("veth-xdp-pass: {e}");
            ExitCode::FAILURE
        }
    }
}
