//! Helpers shared by the integration tests (included with `mod common;`).
#![allow(dead_code)]

use halyard_bgp::wire::{DecodeCxt, EncodeCxt, Message};

/// Parses whitespace-separated hex (`"ff 00 1a"`); `#` starts a comment to end of line.
pub fn hex(s: &str) -> Vec<u8> {
    s.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split_whitespace())
        .map(|b| u8::from_str_radix(b, 16).unwrap_or_else(|e| panic!("bad hex {b:?}: {e}")))
        .collect()
}

/// A full message: marker, length, type, body.
pub fn message(type_code: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0xff; 16];
    out.extend_from_slice(&u16::try_from(19 + body.len()).unwrap().to_be_bytes());
    out.push(type_code);
    out.extend_from_slice(body);
    out
}

/// An UPDATE message with no withdrawn routes, the given attribute bytes and NLRI bytes.
pub fn update_msg(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&u16::try_from(withdrawn.len()).unwrap().to_be_bytes());
    body.extend_from_slice(withdrawn);
    body.extend_from_slice(&u16::try_from(attrs.len()).unwrap().to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(nlri);
    message(2, &body)
}

pub fn four() -> (EncodeCxt, DecodeCxt) {
    (EncodeCxt::new(true), DecodeCxt::new(true))
}

pub fn two() -> (EncodeCxt, DecodeCxt) {
    (EncodeCxt::new(false), DecodeCxt::new(false))
}

/// Asserts `msg` encodes to exactly `bytes` and `bytes` decodes to exactly `msg`.
pub fn assert_both_ways(msg: &Message, bytes: &[u8], enc: &EncodeCxt, dec: &DecodeCxt) {
    let encoded = msg.encode(enc).expect("encode");
    assert_eq!(encoded, bytes, "encode mismatch\n got: {encoded:02x?}\nwant: {bytes:02x?}");
    let (decoded, used) = Message::decode(bytes, dec).expect("decode");
    assert_eq!(used, bytes.len());
    assert_eq!(&decoded, msg);
}
