//! Fuzz the decoding of remote etcd entries: any key and value must give a typed event or a
//! `Malformed` report, never a panic (a remote cluster is not trusted to write valid JSON).
#![no_main]

use halyard_clustermesh::keys::{Key, Resource};
use halyard_clustermesh::watch::{KvEvent, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else { return };
    let split = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    let key = String::from_utf8_lossy(&rest[..split]).into_owned();
    let value = rest.get(split + 1..).unwrap_or_default().to_vec();
    let _ = Key::parse(&key);
    let resource = Resource::ALL[sel as usize % Resource::ALL.len()];
    let ev = KvEvent::Upsert { key, value };
    let _ = decode("east", Some(1), resource, &ev);
});
