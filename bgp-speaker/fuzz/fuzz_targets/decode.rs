//! Fuzz `Message::decode` / `frame_len` and the helpers a session calls on decoded UPDATEs.
//! The first input byte picks the session context (bit 0: 4-octet AS).
#![no_main]

use halyard_bgp::wire::{DecodeCxt, EncodeCxt, Message, frame_len};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let four_octet_as = selector & 1 == 1;
    let cxt = DecodeCxt::new(four_octet_as);
    let _ = frame_len(bytes, &cxt);
    let Ok((msg, used)) = Message::decode(bytes, &cxt) else {
        return;
    };
    assert!(used <= bytes.len());
    // Whatever decodes must encode again without panicking.
    let _ = msg.encode(&EncodeCxt::new(four_octet_as));
    if let Message::Update(update) = msg {
        let _ = update.outcome();
        let _ = update.effective_as_path();
        let _ = update.end_of_rib_family();
        let _ = update.into_withdraw();
    }
});
