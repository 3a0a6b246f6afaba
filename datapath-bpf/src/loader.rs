//! Loading, attaching, pinning and uninstalling the BPF programs.
//!
//! Maps are pinned by name under `pin_dir` and attachments are bpf_links pinned under
//! `pin_dir/links/`, so the datapath keeps forwarding while the agent is down. A restarted agent
//! loads the programs again (reusing the pinned maps: conntrack and backends survive) and swaps
//! the new program into the pinned link atomically (BPF_LINK_UPDATE), so established flows see
//! no gap. `uninstall` removes links and pins.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachType};
use aya::programs::xdp::XdpLink;
use aya::programs::{ProgramError, SchedClassifier, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};

use crate::lb::{LbMapError, LbMaps};

pub static XDP_LB_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp_lb.bpf.o"));
pub static TC_LB_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tc_lb.bpf.o"));
pub static TC_DECAP_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tc_decap.bpf.o"));

pub static XDP_PASS_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp_pass.bpf.o"));

/// The live-frames traffic generator of the veth benchmark.
pub static XDP_GEN_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp_gen.bpf.o"));

pub const PROG_XDP_LB: &str = "hl_xdp_lb";
/// The LB followed by undoing its encapsulation, for `repeat`ed BPF_PROG_TEST_RUN benchmarks.
pub const PROG_XDP_LB_BENCH: &str = "hl_xdp_lb_bench";
pub const PROG_XDP_PASS: &str = "hl_xdp_pass";
pub const PROG_TC_LB: &str = "hl_tc_lb";
pub const PROG_TC_LB_BENCH: &str = "hl_tc_lb_bench";
pub const PROG_TC_DECAP: &str = "hl_tc_decap";

/// Default pin directory (on the host's bpffs).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/halyard";

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "BPF pin directory {0} is not on a bpf filesystem; mount one with \
         `mount -t bpf bpf {0}` (or choose a directory under /sys/fs/bpf)"
    )]
    NotBpffs(PathBuf),
    #[error("creating BPF pin directory {path}: {source}")]
    PinDir { path: PathBuf, source: std::io::Error },
    #[error("loading BPF object {object}: {source}")]
    Load { object: &'static str, source: Box<aya::EbpfError> },
    #[error("program {program}: {action}: {source}")]
    Program { program: &'static str, action: String, source: Box<ProgramError> },
    #[error("program {program}: {what}")]
    Link { program: &'static str, what: String },
    #[error(transparent)]
    Maps(#[from] LbMapError),
    #[error("uninstalling {path}: {source}")]
    Uninstall { path: PathBuf, source: std::io::Error },
}

pub(crate) fn prog_err(program: &'static str, action: impl Into<String>) -> impl FnOnce(ProgramError) -> DatapathError {
    let action = action.into();
    move |source| DatapathError::Program { program, action, source: Box::new(source) }
}

/// Load-time settings of the programs (.rodata constants) and where their state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatapathConfig {
    pub pin_dir: PathBuf,
    /// Outer source address of DSR encapsulation: this node's address on the LB-facing network.
    pub node_ipv4: Ipv4Addr,
    /// Maglev flow-hash seed (bytes 4–7 of the 12-byte cluster seed, as Cilium splits it).
    pub hash_seed: u32,
    pub geneve_vni: u32,
    /// This node's IPv6 address: outer source of DSR encapsulation and SNAT address for IPv6
    /// services (unspecified: IPv6 frontends are not forwarded).
    pub node_ipv6: Ipv6Addr,
    /// IPv6 flow-hash seed (bytes 8–11 of the 12-byte cluster seed, Cilium's `HASH_INIT6_SEED`).
    pub hash_seed6: u32,
}

impl Default for DatapathConfig {
    fn default() -> Self {
        Self {
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
            node_ipv4: Ipv4Addr::UNSPECIFIED,
            hash_seed: 0,
            geneve_vni: 2,
            node_ipv6: Ipv6Addr::UNSPECIFIED,
            hash_seed6: 0,
        }
    }
}

/// Whether `path` (existing) lies on a bpffs mount, by /proc/self/mountinfo.
pub fn is_on_bpffs(path: &Path) -> bool {
    let Ok(path) = path.canonicalize() else { return false };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let mut best: Option<(usize, bool)> = None;
    for line in info.lines() {
        // id parent major:minor root mount-point options ... - fstype source super-options
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else { continue };
        let (Some(mp), Some(fstype)) = (fields.get(4), fields.get(dash + 1)) else { continue };
        let mp = mp.replace("\\040", " ");
        if path.starts_with(&mp) && best.is_none_or(|(len, _)| mp.len() >= len) {
            best = Some((mp.len(), *fstype == "bpf"));
        }
    }
    best.is_some_and(|(_, bpf)| bpf)
}

/// One loaded object and the programs in it.
#[derive(Debug)]
pub struct Datapath {
    cfg: DatapathConfig,
    xdp: Ebpf,
    tc_lb: Option<Ebpf>,
    decap: Option<Ebpf>,
}

impl Datapath {
    /// Loads the XDP LB object (creating or reusing the pinned maps). Nothing is attached yet.
    pub fn load(cfg: DatapathConfig) -> Result<Self, DatapathError> {
        std::fs::create_dir_all(cfg.pin_dir.join("links"))
            .map_err(|source| DatapathError::PinDir { path: cfg.pin_dir.clone(), source })?;
        if !is_on_bpffs(&cfg.pin_dir) {
            return Err(DatapathError::NotBpffs(cfg.pin_dir.clone()));
        }
        let mut xdp = load_object(&cfg, "xdp_lb.bpf.o", XDP_LB_OBJ)?;
        for name in [PROG_XDP_LB, PROG_XDP_LB_BENCH] {
            let p: &mut Xdp = program(&mut xdp, name)?;
            p.load().map_err(prog_err(name, "load (verifier)"))?;
        }
        Ok(Self { cfg, xdp, tc_lb: None, decap: None })
    }

    pub fn config(&self) -> &DatapathConfig {
        &self.cfg
    }

    /// Typed handles on the (pinned) LB maps.
    pub fn maps(&self) -> Result<LbMaps, DatapathError> {
        Ok(LbMaps::open(&self.cfg.pin_dir)?)
    }

    /// Typed handles on the (pinned) IPv6 LB maps.
    pub fn maps6(&self) -> Result<crate::lb6::Lb6Maps, DatapathError> {
        Ok(crate::lb6::Lb6Maps::open(&self.cfg.pin_dir)?)
    }

    pub fn xdp_lb(&mut self) -> Result<&mut Xdp, DatapathError> {
        program(&mut self.xdp, PROG_XDP_LB)
    }

    /// The benchmark variant of the XDP LB (never attached).
    pub fn xdp_lb_bench(&mut self) -> Result<&mut Xdp, DatapathError> {
        program(&mut self.xdp, PROG_XDP_LB_BENCH)
    }

    /// The tc variant of the LB (loaded on first use).
    pub fn tc_lb(&mut self) -> Result<&mut SchedClassifier, DatapathError> {
        if self.tc_lb.is_none() {
            let mut obj = load_object(&self.cfg, "tc_lb.bpf.o", TC_LB_OBJ)?;
            for name in [PROG_TC_LB, PROG_TC_LB_BENCH] {
                let p: &mut SchedClassifier = program(&mut obj, name)?;
                p.load().map_err(prog_err(name, "load (verifier)"))?;
            }
            self.tc_lb = Some(obj);
        }
        program(self.tc_lb.as_mut().unwrap(), PROG_TC_LB)
    }

    /// The benchmark variant of the tc LB (never attached).
    pub fn tc_lb_bench(&mut self) -> Result<&mut SchedClassifier, DatapathError> {
        self.tc_lb()?;
        program(self.tc_lb.as_mut().unwrap(), PROG_TC_LB_BENCH)
    }

    /// The backend-side DSR decapsulation (loaded on first use).
    pub fn tc_decap(&mut self) -> Result<&mut SchedClassifier, DatapathError> {
        if self.decap.is_none() {
            let mut obj = load_object(&self.cfg, "tc_decap.bpf.o", TC_DECAP_OBJ)?;
            let p: &mut SchedClassifier = program(&mut obj, PROG_TC_DECAP)?;
            p.load().map_err(prog_err(PROG_TC_DECAP, "load (verifier)"))?;
            self.decap = Some(obj);
        }
        program(self.decap.as_mut().unwrap(), PROG_TC_DECAP)
    }

    fn link_path(&self, kind: &str, ifname: &str) -> PathBuf {
        self.cfg.pin_dir.join("links").join(format!("{kind}-{ifname}"))
    }

    /// Attaches the XDP LB to `ifname` (native mode, generic if the driver has none), or swaps this
    /// program into the link pinned by an earlier run. Returns the mode used.
    pub fn attach_xdp_lb(&mut self, ifname: &str) -> Result<&'static str, DatapathError> {
        let path = self.link_path("xdp", ifname);
        self.attach_xdp(PROG_XDP_LB, ifname, &path)
    }

    fn attach_xdp(&mut self, name: &'static str, ifname: &str, path: &Path) -> Result<&'static str, DatapathError> {
        let prog = program::<Xdp>(&mut self.xdp, name)?;
        let reused = reuse_pinned_link(name, path, "XDP", XdpLink::try_from, |link| {
            // The pin keeps the link; dropping our handle only closes a file descriptor.
            prog.attach_to_link(link).map(|id| drop(prog.take_link(id)))
        })?;
        if reused {
            return Ok("replaced");
        }
        let (id, mode) = match prog.attach(ifname, XdpMode::Driver) {
            Ok(id) => (id, "native"),
            Err(_) => {
                (prog.attach(ifname, XdpMode::Skb).map_err(prog_err(name, format!("attach to {ifname}")))?, "generic")
            }
        };
        let link = prog.take_link(id).map_err(prog_err(name, "take link"))?;
        let fd = FdLink::try_from(link).map_err(|e| DatapathError::Link {
            program: name,
            what: format!("link on {ifname} is not a bpf_link: {e}"),
        })?;
        fd.pin(path).map_err(|e| DatapathError::Link {
            program: name,
            what: format!("pinning link at {}: {e}", path.display()),
        })?;
        Ok(mode)
    }

    /// Attaches the DSR decapsulation at tc ingress of `ifname` (pinned like the XDP link).
    pub fn attach_tc_decap(&mut self, ifname: &str) -> Result<&'static str, DatapathError> {
        let path = self.link_path("tc-decap", ifname);
        self.tc_decap()?;
        let prog = program::<SchedClassifier>(self.decap.as_mut().unwrap(), PROG_TC_DECAP)?;
        attach_tc(prog, PROG_TC_DECAP, ifname, &path)
    }

    /// Attaches the tc LB at tc ingress of `ifname`.
    pub fn attach_tc_lb(&mut self, ifname: &str) -> Result<&'static str, DatapathError> {
        let path = self.link_path("tc-lb", ifname);
        self.tc_lb()?;
        let prog = program::<SchedClassifier>(self.tc_lb.as_mut().unwrap(), PROG_TC_LB)?;
        attach_tc(prog, PROG_TC_LB, ifname, &path)
    }
}

/// Swaps a freshly loaded program into the link an earlier run pinned at `path`, if there is one.
/// Returns whether it did. A link that outlived its device (interface or namespace gone) is
/// removed, so the caller attaches anew.
fn reuse_pinned_link<L>(
    name: &'static str,
    path: &Path,
    kind: &str,
    convert: impl FnOnce(FdLink) -> Result<L, aya::programs::links::LinkError>,
    replace: impl FnOnce(L) -> Result<(), ProgramError>,
) -> Result<bool, DatapathError> {
    if !path.exists() {
        return Ok(false);
    }
    let pinned = PinnedLink::from_pin(path).map_err(|e| DatapathError::Link {
        program: name,
        what: format!("reading pinned link {}: {e}", path.display()),
    })?;
    let link = convert(FdLink::from(pinned)).map_err(|e| DatapathError::Link {
        program: name,
        what: format!("pinned link {} is not a {kind} link: {e}", path.display()),
    })?;
    match replace(link) {
        Ok(()) => Ok(true),
        Err(e) => {
            tracing::warn!("stale {kind} link {} ({e}); attaching anew", path.display());
            let _ = std::fs::remove_file(path);
            Ok(false)
        }
    }
}

pub(crate) fn attach_tc(
    prog: &mut SchedClassifier,
    name: &'static str,
    ifname: &str,
    path: &Path,
) -> Result<&'static str, DatapathError> {
    let reused = reuse_pinned_link(name, path, "tc", SchedClassifierLink::try_from, |link| {
        prog.attach_to_link(link).map(|id| drop(prog.take_link(id)))
    })?;
    if reused {
        return Ok("replaced");
    }
    let id =
        prog.attach(ifname, TcAttachType::Ingress).map_err(prog_err(name, format!("attach to {ifname} ingress")))?;
    let link = prog.take_link(id).map_err(prog_err(name, "take link"))?;
    let fd = FdLink::try_from(link).map_err(|e| DatapathError::Link {
        program: name,
        what: format!("tc link on {ifname} is not a bpf_link (kernel < 6.6?): {e}"),
    })?;
    fd.pin(path)
        .map_err(|e| DatapathError::Link { program: name, what: format!("pinning link at {}: {e}", path.display()) })?;
    Ok("tcx")
}

/// Like [`attach_tc`], at either tc hook and at a chosen place in its TCX chain (a new link
/// only: a link pinned by an earlier run gets the program swapped in and keeps its place).
pub(crate) fn attach_tcx(
    prog: &mut SchedClassifier,
    name: &'static str,
    ifname: &str,
    path: &Path,
    hook: TcAttachType,
    order: aya::programs::LinkOrder,
) -> Result<&'static str, DatapathError> {
    let reused = reuse_pinned_link(name, path, "tc", SchedClassifierLink::try_from, |link| {
        prog.attach_to_link(link).map(|id| drop(prog.take_link(id)))
    })?;
    if reused {
        return Ok("replaced");
    }
    let id = prog
        .attach_with_options(ifname, hook, aya::programs::tc::TcAttachOptions::TcxOrder(order))
        .map_err(prog_err(name, format!("attach to {ifname} {hook:?}")))?;
    let link = prog.take_link(id).map_err(prog_err(name, "take link"))?;
    let fd = FdLink::try_from(link).map_err(|e| DatapathError::Link {
        program: name,
        what: format!("tc link on {ifname} is not a bpf_link (kernel < 6.6?): {e}"),
    })?;
    fd.pin(path)
        .map_err(|e| DatapathError::Link { program: name, what: format!("pinning link at {}: {e}", path.display()) })?;
    Ok("tcx")
}

/// Attaches the XDP_PASS program to `ifname` (native mode) and pins the link at `pin`, so it stays
/// after this process exits. For the bridge-side veth of an LB node in labs and tests.
pub fn attach_veth_xdp_pass(ifname: &str, pin: &Path) -> Result<(), DatapathError> {
    let mut obj = EbpfLoader::new()
        .load(XDP_PASS_OBJ)
        .map_err(|source| DatapathError::Load { object: "xdp_pass.bpf.o", source: Box::new(source) })?;
    let prog: &mut Xdp = program(&mut obj, PROG_XDP_PASS)?;
    prog.load().map_err(prog_err(PROG_XDP_PASS, "load (verifier)"))?;
    let id = prog.attach(ifname, XdpMode::Driver).map_err(prog_err(PROG_XDP_PASS, format!("attach to {ifname}")))?;
    let link = prog.take_link(id).map_err(prog_err(PROG_XDP_PASS, "take link"))?;
    let fd = FdLink::try_from(link).map_err(|e| DatapathError::Link {
        program: PROG_XDP_PASS,
        what: format!("link on {ifname} is not a bpf_link: {e}"),
    })?;
    fd.pin(pin).map_err(|e| DatapathError::Link {
        program: PROG_XDP_PASS,
        what: format!("pinning link at {}: {e}", pin.display()),
    })?;
    Ok(())
}

/// Detaches everything pinned under `pin_dir/links` and removes all pins and the directory.
/// Returns what was removed.
pub fn uninstall(pin_dir: &Path) -> Result<Vec<PathBuf>, DatapathError> {
    let mut removed = Vec::new();
    if !pin_dir.exists() {
        return Ok(removed);
    }
    let links = pin_dir.join("links");
    if let Ok(entries) = std::fs::read_dir(&links) {
        for e in entries.flatten() {
            let path = e.path();
            match PinnedLink::from_pin(&path) {
                // Unpinning drops the last reference: the kernel detaches the program.
                Ok(link) => {
                    link.unpin().map_err(|source| DatapathError::Uninstall { path: path.clone(), source })?;
                }
                Err(_) => std::fs::remove_file(&path)
                    .map_err(|source| DatapathError::Uninstall { path: path.clone(), source })?,
            }
            removed.push(path);
        }
        let _ = std::fs::remove_dir(&links);
    }
    for e in std::fs::read_dir(pin_dir)
        .map_err(|source| DatapathError::Uninstall { path: pin_dir.into(), source })?
        .flatten()
    {
        let path = e.path();
        if path.is_file() || path.is_symlink() || !path.is_dir() {
            std::fs::remove_file(&path).map_err(|source| DatapathError::Uninstall { path: path.clone(), source })?;
            removed.push(path);
        }
    }
    std::fs::remove_dir(pin_dir).map_err(|source| DatapathError::Uninstall { path: pin_dir.into(), source })?;
    Ok(removed)
}

fn load_object(cfg: &DatapathConfig, object: &'static str, bytes: &[u8]) -> Result<Ebpf, DatapathError> {
    let node = u32::from_ne_bytes(cfg.node_ipv4.octets());
    EbpfLoader::new()
        .default_map_pin_directory(&cfg.pin_dir)
        .override_global("CFG_HASH_SEED", &cfg.hash_seed, true)
        .override_global("CFG_NODE_IPV4", &node, object != "tc_decap.bpf.o")
        .override_global("CFG_GENEVE_VNI", &cfg.geneve_vni, object != "tc_decap.bpf.o")
        .override_global("CFG_NODE_IPV6", &cfg.node_ipv6.octets(), false)
        .override_global("CFG_HASH_SEED6", &cfg.hash_seed6, false)
        .load(bytes)
        .map_err(|source| DatapathError::Load { object, source: Box::new(source) })
}

pub(crate) fn program<'a, T>(obj: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, DatapathError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let p = obj
        .program_mut(name)
        .ok_or_else(|| DatapathError::Link { program: name, what: "missing from the BPF object".into() })?;
    p.try_into().map_err(prog_err(name, "program type"))
}
