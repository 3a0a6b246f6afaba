//! Property: decode(encode(m)) == m, in 2- and 4-octet AS sessions.

mod common;
mod strategies;

use halyard_bgp::wire::*;
use proptest::prelude::*;
use strategies::{AsWidth, as_path, message};

fn round_trip(msg: &Message, four_octet_as: bool) -> Result<(), TestCaseError> {
    let enc = EncodeCxt::new(four_octet_as);
    let dec = DecodeCxt::new(four_octet_as);
    let bytes = match msg.encode(&enc) {
        Ok(b) => b,
        Err(EncodeError::TooLong { .. }) => return Err(TestCaseError::reject("too long")),
    };
    prop_assert_eq!(frame_len(&bytes, &dec).unwrap(), Some(bytes.len()));
    let (decoded, used) = Message::decode(&bytes, &dec).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(used, bytes.len());
    prop_assert_eq!(&decoded, msg);
    // And encoding is deterministic.
    prop_assert_eq!(decoded.encode(&enc).unwrap(), bytes);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn round_trip_4_octet_as(msg in message(AsWidth::Four)) {
        round_trip(&msg, true)?;
    }

    #[test]
    fn round_trip_2_octet_as(msg in message(AsWidth::Two)) {
        round_trip(&msg, false)?;
    }

    /// With a 2-octet peer, 4-octet ASNs survive through AS_TRANS + AS4_PATH (RFC 6793 §4.2).
    #[test]
    fn as4_path_reconstructs_the_path(path in as_path(AsWidth::Four, false)) {
        let update = Update {
            attributes: vec![
                PathAttribute::Origin(Origin::Igp),
                PathAttribute::AsPath(path.clone()),
                PathAttribute::NextHop(std::net::Ipv4Addr::new(192, 0, 2, 1)),
            ],
            nlri: vec!["10.0.0.0/8".parse().unwrap()],
            ..Update::default()
        };
        let bytes = Message::Update(update).encode(&EncodeCxt::new(false)).unwrap();
        let (Message::Update(got), _) = Message::decode(&bytes, &DecodeCxt::new(false)).unwrap() else {
            panic!("not an UPDATE")
        };
        prop_assert_eq!(got.outcome(), None);
        prop_assert_eq!(got.effective_as_path(), Some(path));
    }
}
