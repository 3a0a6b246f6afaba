//! `halyard-bgpd` as a relay: routes from one peer reach another with the AS path extended,
//! and are withdrawn downstream when the source session goes away. Needs root and bird2.

use std::time::Duration;

use halyard_tests::bin;
use halyard_tests::netns::{Netns, require_program, require_root, veth_pair, wait_until};
use halyard_tests::peers::{BgpNeighbor, Bird, BirdConfig};

#[test]
fn relayed_routes_carry_the_as_path_and_follow_the_source() {
    if !require_root() || !require_program("bird", "bird2") {
        return;
    }
    let inj = Netns::new("inj");
    let dut = Netns::new("dut");
    let rcv_ns = Netns::new("rcv");
    veth_pair(&inj, "eth0", &["10.67.0.1/24"], &dut, "eth0", &["10.67.0.2/24"]);
    veth_pair(&dut, "eth1", &["10.66.0.1/24"], &rcv_ns, "eth0", &["10.66.0.2/24"]);
    let rcv = Bird::start(&rcv_ns, &BirdConfig::new("10.66.0.2").neighbor(BgpNeighbor::new("10.66.0.1", 65000, 65001)));
    let dir = tempfile::tempdir().unwrap();
    let dut_conf = dir.path().join("dut.toml");
    std::fs::write(
        &dut_conf,
        "router_id = \"10.66.0.1\"\nlocal_asn = 65001\nrelay = true\nlisten_port = 179\n\
         [[peer]]\naddress = \"10.67.0.1\"\nasn = 65100\nconnect_retry_time = 1\n\
         [[peer]]\naddress = \"10.66.0.2\"\nasn = 65000\nconnect_retry_time = 1\n\
         [[route]]\nprefix = \"192.0.2.0/24\"\n",
    )
    .unwrap();
    let _dut = dut
        .spawn([bin("halyard-bgpd").to_str().unwrap(), "-c", dut_conf.to_str().unwrap()], dir.path().join("dut.log"));
    let inj_conf = dir.path().join("inj.toml");
    std::fs::write(
        &inj_conf,
        "router_id = \"10.67.0.1\"\nlocal_asn = 65100\n[[peer]]\naddress = \"10.67.0.2\"\nasn = 65001\n\
         connect_retry_time = 1\n[[generate]]\nstart = \"10.9.0.0\"\ncount = 50\n\
         [[route]]\nprefix = \"198.51.100.0/24\"\ncommunities = [\"65100:7\"]\n",
    )
    .unwrap();
    let mut injector = inj
        .spawn([bin("halyard-bgpd").to_str().unwrap(), "-c", inj_conf.to_str().unwrap()], dir.path().join("inj.log"));

    let routes = wait_until(Duration::from_secs(20), "the relayed routes at the receiver", || {
        let r = rcv.routes(None);
        (r.contains("10.9.0.49/32") && r.contains("198.51.100.0/24") && r.contains("192.0.2.0/24")).then_some(r)
    });
    // Relayed: our AS prepended to the injector's; originated by us: our AS alone.
    let relayed = rcv.birdc("show route all 198.51.100.0/24");
    assert!(relayed.contains("BGP.as_path: 65001 65100"), "{relayed}");
    assert!(relayed.contains("(65100,7)"), "communities travel on:\n{relayed}");
    let own = rcv.birdc("show route all 192.0.2.0/24");
    assert!(own.contains("BGP.as_path: 65001\n") || own.trim_end().ends_with("BGP.as_path: 65001"), "{own}");
    assert!(routes.contains("10.9.0.0/32"), "{routes}");

    // The source goes away: everything learned from it is withdrawn downstream, ours stays.
    injector.stop(Duration::from_secs(2));
    wait_until(Duration::from_secs(10), "the relayed routes to be withdrawn", || {
        let r = rcv.routes(None);
        (!r.contains("198.51.100.0/24") && !r.contains("10.9.0.0/32")).then_some(())
    });
    assert!(rcv.routes(None).contains("192.0.2.0/24"));
}
