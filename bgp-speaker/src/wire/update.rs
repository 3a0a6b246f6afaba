//! UPDATE message (RFC 4271 §4.3) with revised error handling (RFC 7606) and End-of-RIB
//! (RFC 4724 §2).

use std::net::Ipv4Addr;

use super::attribute::{
    Aggregator, AsPath, AttrError, Community, LargeCommunity, MpReach, MpUnreach, Origin, PathAttribute, attr_flags,
    attr_type,
};
use super::buf::{Reader, put_u16_at};
use super::error::{AttrProblem, DecodeError, Outcome};
use super::notification::UpdateSubcode;
use super::prefix::{AfiSafi, Ipv4Prefix};
use super::{AS_TRANS, DecodeCxt, EncodeCxt};

/// UPDATE message body (RFC 4271 §4.3).
///
/// ```text
/// +-----------------------------------------------------+
/// |   Withdrawn Routes Length (2 octets)                |
/// +-----------------------------------------------------+
/// |   Withdrawn Routes (variable)                       |
/// +-----------------------------------------------------+
/// |   Total Path Attribute Length (2 octets)            |
/// +-----------------------------------------------------+
/// |   Path Attributes (variable)                        |
/// +-----------------------------------------------------+
/// |   Network Layer Reachability Information (variable) |
/// +-----------------------------------------------------+
/// ```
///
/// Attributes are kept in wire order and encoded in the order given.
///
/// `problems` is filled by decode with what RFC 7606 let us survive (discarded or malformed
/// attributes, which are not in `attributes`); the encoder ignores it. See [`Update::outcome`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Update {
    pub withdrawn: Vec<Ipv4Prefix>,
    pub attributes: Vec<PathAttribute>,
    pub nlri: Vec<Ipv4Prefix>,
    pub problems: Vec<AttrProblem>,
}

macro_rules! getter {
    ($(#[$m:meta])* $name:ident, $variant:ident, $ty:ty) => {
        $(#[$m])*
        pub fn $name(&self) -> Option<&$ty> {
            self.attributes.iter().find_map(|a| match a {
                PathAttribute::$variant(v) => Some(v),
                _ => None,
            })
        }
    };
}

impl Update {
    getter!(origin, Origin, Origin);
    getter!(as_path, AsPath, AsPath);
    getter!(next_hop, NextHop, Ipv4Addr);
    getter!(med, MultiExitDisc, u32);
    getter!(local_pref, LocalPref, u32);
    getter!(communities, Communities, Vec<Community>);
    getter!(large_communities, LargeCommunities, Vec<LargeCommunity>);
    getter!(mp_reach, MpReach, MpReach);
    getter!(mp_unreach, MpUnreach, MpUnreach);
    getter!(as4_path, As4Path, AsPath);
    getter!(aggregator, Aggregator, Aggregator);
    getter!(as4_aggregator, As4Aggregator, Aggregator);

    /// The End-of-RIB marker for `family` (RFC 4724 §2): an empty UPDATE for IPv4 unicast, else
    /// an UPDATE with only an empty MP_UNREACH_NLRI.
    pub fn end_of_rib(family: AfiSafi) -> Self {
        let attributes = match family {
            AfiSafi::IPV4_UNICAST => Vec::new(),
            AfiSafi::IPV6_UNICAST => vec![PathAttribute::MpUnreach(MpUnreach::Ipv6Unicast(Vec::new()))],
            family => vec![PathAttribute::MpUnreach(MpUnreach::Other { family, withdrawn: Vec::new() })],
        };
        Self { attributes, ..Self::default() }
    }

    /// `Some(family)` if this UPDATE is an End-of-RIB marker (RFC 4724 §2).
    pub fn end_of_rib_family(&self) -> Option<AfiSafi> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        match self.attributes.as_slice() {
            [] => Some(AfiSafi::IPV4_UNICAST),
            [PathAttribute::MpUnreach(m)] if m.is_empty() => Some(m.family()),
            _ => None,
        }
    }

    /// The most severe RFC 7606 outcome among `problems` (`None`: the UPDATE is clean).
    /// Session resets are never here: decode returns them as errors.
    pub fn outcome(&self) -> Option<&Outcome> {
        self.problems.iter().map(|p| &p.outcome).max_by_key(|o| o.severity())
    }

    /// RFC 7606 §2 "treat-as-withdraw": the same UPDATE with every announced prefix (NLRI field
    /// and MP_REACH_NLRI) moved to the withdrawn routes / MP_UNREACH_NLRI, and every other
    /// attribute dropped.
    ///
    /// An unparsed MP_REACH_NLRI of another family becomes an MP_UNREACH_NLRI with the same
    /// raw NLRI (the encoding of the prefixes is the same in both attributes, RFC 4760 §3/§4).
    pub fn into_withdraw(self) -> Update {
        let mut withdrawn = self.withdrawn;
        withdrawn.extend(self.nlri);
        let mut attributes = Vec::new();
        for attr in self.attributes {
            match attr {
                PathAttribute::MpUnreach(m) => attributes.push(PathAttribute::MpUnreach(m)),
                PathAttribute::MpReach(MpReach::Ipv4Unicast { nlri, .. }) => withdrawn.extend(nlri),
                PathAttribute::MpReach(MpReach::Ipv6Unicast { nlri, .. }) => {
                    attributes.push(PathAttribute::MpUnreach(MpUnreach::Ipv6Unicast(nlri)));
                }
                PathAttribute::MpReach(MpReach::Other { family, nlri, .. }) => {
                    attributes.push(PathAttribute::MpUnreach(MpUnreach::Other { family, withdrawn: nlri }));
                }
                _ => {}
            }
        }
        Update { withdrawn, attributes, nlri: Vec::new(), problems: self.problems }
    }

    /// The real AS path (RFC 6793 §4.2.3): AS_PATH merged with AS4_PATH when both are present
    /// (only from a 2-octet peer: the decoder discards AS4_PATH from 4-octet peers). AS4_PATH is
    /// ignored when AGGREGATOR carries a real 2-octet AS rather than AS_TRANS: a 2-octet speaker
    /// aggregated the route after AS4_PATH was added.
    pub fn effective_as_path(&self) -> Option<AsPath> {
        let path = self.as_path()?;
        let aggregated_by_old_speaker = self.aggregator().is_some_and(|a| a.asn != AS_TRANS);
        Some(match self.as4_path() {
            Some(as4) if !aggregated_by_old_speaker => path.merge_as4(as4),
            _ => path.clone(),
        })
    }

    /// The real aggregator (RFC 6793 §4.2.3): AS4_AGGREGATOR when AGGREGATOR says AS_TRANS.
    pub fn effective_aggregator(&self) -> Option<Aggregator> {
        let aggregator = self.aggregator()?;
        match self.as4_aggregator() {
            Some(real) if aggregator.asn == AS_TRANS => Some(*real),
            _ => Some(*aggregator),
        }
    }

    // ===== encode =====

    /// Encodes the body. With a 2-octet-AS peer, ASNs above 65535 in AS_PATH/AGGREGATOR become
    /// AS_TRANS and AS4_PATH/AS4_AGGREGATOR are added right after them, unless present in
    /// `attributes` already (RFC 6793 §4.2.2). With a 4-octet peer, As4Path/As4Aggregator
    /// attributes are not sent (RFC 6793 §4.1).
    pub(crate) fn encode_body(&self, cxt: &EncodeCxt, out: &mut Vec<u8>) {
        let four = cxt.four_octet_as;
        let pos = out.len();
        out.extend_from_slice(&[0, 0]);
        self.withdrawn.iter().for_each(|p| p.encode(out));
        let len = out.len() - pos - 2;
        put_u16_at(out, pos, len);

        let pos = out.len();
        out.extend_from_slice(&[0, 0]);
        let has_as4_path = self.attributes.iter().any(|a| matches!(a, PathAttribute::As4Path(_)));
        let has_as4_aggr = self.attributes.iter().any(|a| matches!(a, PathAttribute::As4Aggregator(_)));
        for attr in &self.attributes {
            match attr {
                PathAttribute::As4Path(_) | PathAttribute::As4Aggregator(_) if four => continue,
                _ => attr.encode(four, out),
            }
            if four {
                continue;
            }
            match attr {
                PathAttribute::AsPath(p) if !has_as4_path && p.needs_as4() => {
                    PathAttribute::As4Path(p.to_as4_path()).encode(four, out);
                }
                PathAttribute::Aggregator(a) if !has_as4_aggr && a.asn > 0xffff => {
                    PathAttribute::As4Aggregator(*a).encode(four, out);
                }
                _ => {}
            }
        }
        let len = out.len() - pos - 2;
        put_u16_at(out, pos, len);

        self.nlri.iter().for_each(|p| p.encode(out));
    }

    // ===== decode =====

    /// Decodes the body (after the 19-octet header), applying RFC 7606.
    ///
    /// `Err` only for a session reset. Otherwise the parsed UPDATE, with `problems` listing
    /// discarded/malformed attributes; when [`Update::outcome`] is `TreatAsWithdraw`, use
    /// [`Update::into_withdraw`].
    pub fn decode_body(body: &[u8], cxt: &DecodeCxt) -> Result<Update, DecodeError> {
        let malformed_list = |why: &str| DecodeError::update(why, UpdateSubcode::MalformedAttributeList, Vec::new());
        let mut r = Reader::new(body);

        // RFC 4271 §6.3: lengths that overrun the message -> Malformed Attribute List.
        let wlen = r.u16().ok_or_else(|| malformed_list("missing Withdrawn Routes Length"))?;
        let withdrawn = r.take(usize::from(wlen)).ok_or_else(|| malformed_list("Withdrawn Routes Length overrun"))?;
        let alen = r.u16().ok_or_else(|| malformed_list("missing Total Path Attribute Length"))?;
        let attrs = r.take(usize::from(alen)).ok_or_else(|| malformed_list("Total Path Attribute Length overrun"))?;
        let nlri = r.rest();

        // RFC 7606 §5.3: unparseable prefixes -> session reset (Invalid Network Field).
        let invalid_network = |what: &str, e: &str| {
            DecodeError::update(format!("{what}: {e}"), UpdateSubcode::InvalidNetworkField, vec![])
        };
        let withdrawn = Ipv4Prefix::decode_all(withdrawn).map_err(|e| invalid_network("withdrawn routes", e))?;
        let nlri = Ipv4Prefix::decode_all(nlri).map_err(|e| invalid_network("NLRI", e))?;

        let mut update = Update { withdrawn, attributes: Vec::new(), nlri, problems: Vec::new() };
        let mut seen = [false; 256];
        let mut r = Reader::new(attrs);
        while !r.is_empty() {
            let start = attrs.len() - r.remaining();
            // RFC 7606 §4: a truncated attribute header or a length overrunning the Total Path
            // Attribute Length -> treat-as-withdraw, relying on the total length to find the
            // NLRI. (An MP_* attribute after that point is lost with the rest: its prefixes are
            // not withdrawn, which the session must accept as RFC 7606 §4 does.)
            let header = (r.u8(), r.u8());
            let (Some(flags), Some(type_code)) = header else {
                update.problem(None, Outcome::TreatAsWithdraw, "truncated attribute header (RFC 7606 §4)");
                break;
            };
            let len = if flags & attr_flags::EXTENDED_LENGTH != 0 { r.u16() } else { r.u8().map(u16::from) };
            let Some(value) = len.and_then(|len| r.take(usize::from(len))) else {
                // RFC 7606 §5.1/§4: treat-as-withdraw needs the MP_* NLRI located; it is not.
                if matches!(type_code, attr_type::MP_REACH_NLRI | attr_type::MP_UNREACH_NLRI) {
                    return Err(DecodeError::update(
                        format!("attribute {type_code} overruns the attribute list"),
                        UpdateSubcode::AttributeLengthError,
                        Vec::new(),
                    ));
                }
                update.problem(
                    Some(type_code),
                    Outcome::TreatAsWithdraw,
                    "attribute overruns the attribute list (RFC 7606 §4)",
                );
                break;
            };
            let raw = &attrs[start..attrs.len() - r.remaining()];

            // RFC 7606 §3.g: duplicate MP_* -> reset; other duplicates -> discard all but the first.
            if seen[usize::from(type_code)] {
                if matches!(type_code, attr_type::MP_REACH_NLRI | attr_type::MP_UNREACH_NLRI) {
                    return Err(malformed_list("duplicate MP_REACH_NLRI/MP_UNREACH_NLRI (RFC 7606 §3.g)"));
                }
                update.problem(Some(type_code), Outcome::AttributeDiscard, "duplicate attribute (RFC 7606 §3.g)");
                continue;
            }
            seen[usize::from(type_code)] = true;

            // RFC 6793 §4.1: a 4-octet peer must not send AS4_PATH/AS4_AGGREGATOR; discard them.
            if cxt.four_octet_as && matches!(type_code, attr_type::AS4_PATH | attr_type::AS4_AGGREGATOR) {
                update.problem(Some(type_code), Outcome::AttributeDiscard, "AS4_* attribute from a 4-octet-AS peer");
                continue;
            }

            match PathAttribute::decode(flags, type_code, value, raw, cxt.four_octet_as) {
                Ok(attr) => update.attributes.push(attr),
                Err(AttrError::Discard(why)) => update.problem(Some(type_code), Outcome::AttributeDiscard, &why),
                Err(AttrError::Withdraw(why)) => update.problem(Some(type_code), Outcome::TreatAsWithdraw, &why),
                Err(AttrError::Reset(e)) => return Err(e),
            }
        }

        // RFC 7606 §3.d: missing well-known mandatory attributes -> treat-as-withdraw. They are
        // only required when the UPDATE announces something; NEXT_HOP only for the NLRI field
        // (RFC 4760 §3). A malformed attribute already reported is not reported again.
        let announces = !update.nlri.is_empty() || seen[usize::from(attr_type::MP_REACH_NLRI)];
        if announces {
            let mut mandatory = vec![attr_type::ORIGIN, attr_type::AS_PATH];
            if !update.nlri.is_empty() {
                mandatory.push(attr_type::NEXT_HOP);
            }
            for t in mandatory {
                if !seen[usize::from(t)] {
                    update.problem(
                        Some(t),
                        Outcome::TreatAsWithdraw,
                        "missing well-known mandatory attribute (RFC 7606 §3.d)",
                    );
                }
            }
        }
        Ok(update)
    }

    fn problem(&mut self, type_code: Option<u8>, outcome: Outcome, reason: &str) {
        self.problems.push(AttrProblem { type_code, outcome, reason: reason.to_string() });
    }
}
