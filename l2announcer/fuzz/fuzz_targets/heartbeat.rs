//! Fuzz the election heartbeat decoder: arbitrary LAN bytes must give a typed error or a
//! heartbeat that encodes back to the same bytes' meaning, never a panic.
#![no_main]

use halyard_l2::heartbeat::Heartbeat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(hb) = Heartbeat::decode(data) {
        let again = hb.encode().expect("a decoded heartbeat encodes");
        assert_eq!(Heartbeat::decode(&again).expect("round trip"), hb);
    }
});
