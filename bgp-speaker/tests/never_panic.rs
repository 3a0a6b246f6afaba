//! Property: no input makes the decoder panic (a stand-in for cargo-fuzz on stable; see
//! `bgp-speaker/fuzz/`).

mod common;
mod strategies;

use halyard_bgp::wire::*;
use proptest::collection::vec;
use proptest::prelude::*;
use strategies::{AsWidth, message};

/// Runs every decoder entry point and the helpers a session would call on the result.
fn exercise(bytes: &[u8]) {
    for four in [false, true] {
        let cxt = DecodeCxt::new(four);
        let _ = frame_len(bytes, &cxt);
        if let Ok((msg, used)) = Message::decode(bytes, &cxt) {
            assert!(used <= bytes.len());
            // Whatever decoded must encode again (maybe too long for 4096 after AS4_* synthesis).
            let _ = msg.encode(&EncodeCxt::new(four));
            match msg {
                Message::Update(u) => {
                    let _ = u.outcome();
                    let _ = u.effective_as_path();
                    let _ = u.end_of_rib_family();
                    let _ = u.clone().into_withdraw();
                }
                Message::Notification(n) => {
                    let _ = n.shutdown_communication();
                    let _ = n.to_string();
                }
                _ => {}
            }
        }
    }
}

/// Rewrites the header length to match the buffer, so mutations reach the body decoders.
fn fix_length(bytes: &mut [u8]) {
    if bytes.len() >= 19 {
        let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX).to_be_bytes();
        bytes[16..18].copy_from_slice(&len);
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => any::<usize>().prop_map(Mutation::Remove),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len().max(1);
    match *m {
        Mutation::Set(i, b) => {
            if let Some(x) = bytes.get_mut(i % n) {
                *x = b;
            }
        }
        Mutation::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
        Mutation::Remove(i) => {
            if !bytes.is_empty() {
                bytes.remove(i % n);
            }
        }
        Mutation::Truncate(i) => bytes.truncate(i % n),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn arbitrary_bytes(bytes in vec(any::<u8>(), 0..600)) {
        exercise(&bytes);
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_header(ty in 1u8..=5, body in vec(any::<u8>(), 0..600)) {
        exercise(&common::message(ty, &body));
    }

    #[test]
    fn mutated_valid_messages(
        msg in message(AsWidth::Four),
        mutations in vec(mutation(), 1..6),
        fix in any::<bool>(),
    ) {
        let Ok(mut bytes) = msg.encode(&EncodeCxt::new(true)) else { return Ok(()) };
        for m in &mutations {
            apply(&mut bytes, m);
        }
        if fix {
            fix_length(&mut bytes);
        }
        exercise(&bytes);
    }
}
