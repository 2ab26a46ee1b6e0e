//! Stateless nonces for the long-term credential mechanism (RFC 8489 §9.2).
//!
//! The relay keeps no state for a client until MESSAGE-INTEGRITY has passed, so a nonce must be
//! checkable from itself alone: it carries its expiry and a MAC over that expiry and the
//! client's 5-tuple under a per-process key. A nonce presented from another 5-tuple, forged,
//! from a previous process or past its expiry is stale (438), and the answer carries a fresh one.
//!
//! The expiry is rounded up to the minute, so that within a minute the same 5-tuple gets the
//! same nonce and a retransmitted request gets a byte-identical challenge. Wire form: base64url
//! of 4 bytes of expiry and 8 bytes of HMAC-SHA1, 16 characters.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use super::{FiveTuple, Time};

const MAC_LEN: usize = 8;
const RAW_LEN: usize = 4 + MAC_LEN;
/// Length of a nonce on the wire.
pub const NONCE_LEN: usize = 16;

/// Issues and checks nonces with one key.
#[derive(Clone)]
pub struct Nonces {
    mac: Hmac<Sha1>,
    lifetime_secs: u64,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nonces")
            .field("lifetime_secs", &self.lifetime_secs)
            .finish_non_exhaustive()
    }
}

impl Nonces {
    /// Nonces keyed by `key`, each valid for about `lifetime_secs` (plus up to a minute).
    pub fn new(key: &[u8; 32], lifetime_secs: u64) -> Self {
        Nonces {
            mac: Hmac::new_from_slice(key).expect("HMAC accepts 32-byte keys"),
            lifetime_secs,
        }
    }

    /// The nonce for `tuple` at `now`.
    pub fn issue(&self, now: Time, tuple: &FiveTuple) -> String {
        let expiry = (now.unix_secs() / 60 + 1) * 60 + self.lifetime_secs;
        let expiry = u32::try_from(expiry).unwrap_or(u32::MAX);
        let mut raw = [0u8; RAW_LEN];
        raw[..4].copy_from_slice(&expiry.to_be_bytes());
        raw[4..].copy_from_slice(&self.tag(expiry, tuple));
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Whether `nonce` was issued by us, for this `tuple`, and has not expired at `now`.
    pub fn is_valid(&self, nonce: &str, now: Time, tuple: &FiveTuple) -> bool {
        if nonce.len() != NONCE_LEN {
            return false;
        }
        let mut raw = [0u8; RAW_LEN];
        match URL_SAFE_NO_PAD.decode_slice(nonce, &mut raw) {
            Ok(RAW_LEN) => {}
            _ => return false,
        }
        let expiry = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let tag_ok: bool = self.tag(expiry, tuple).ct_eq(&raw[4..]).into();
        tag_ok && u64::from(expiry) >= now.unix_secs()
    }

    fn tag(&self, expiry: u32, tuple: &FiveTuple) -> [u8; MAC_LEN] {
        let mut mac = self.mac.clone();
        mac.update(&expiry.to_be_bytes());
        tuple.hash_into(|bytes| mac.update(bytes));
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Transport;

    fn tuple(port: u16) -> FiveTuple {
        FiveTuple {
            transport: Transport::Udp,
            client: format!("192.0.2.1:{port}").parse().unwrap(),
            server: "192.0.2.2:3478".parse().unwrap(),
        }
    }

    #[test]
    fn valid_for_its_tuple_until_expiry() {
        let n = Nonces::new(&[7; 32], 600);
        let t0 = Time::from_unix_secs(1_000_000);
        let nonce = n.issue(t0, &tuple(1));
        assert_eq!(nonce.len(), NONCE_LEN);
        assert!(n.is_valid(&nonce, t0, &tuple(1)));
        assert!(n.is_valid(&nonce, t0 + std::time::Duration::from_secs(600), &tuple(1)));
        assert!(!n.is_valid(&nonce, t0 + std::time::Duration::from_secs(661), &tuple(1)));
        assert!(!n.is_valid(&nonce, t0, &tuple(2)), "bound to the 5-tuple");
        let other_key = Nonces::new(&[8; 32], 600);
        assert!(
            !other_key.is_valid(&nonce, t0, &tuple(1)),
            "bound to the key"
        );
    }

    #[test]
    fn same_within_a_minute_then_rotates() {
        let n = Nonces::new(&[7; 32], 600);
        let t0 = Time::from_unix_secs(1_000_020);
        assert_eq!(
            n.issue(t0, &tuple(1)),
            n.issue(t0 + std::time::Duration::from_secs(30), &tuple(1))
        );
        assert_ne!(
            n.issue(t0, &tuple(1)),
            n.issue(t0 + std::time::Duration::from_secs(60), &tuple(1))
        );
    }

    #[test]
    fn garbage_is_not_valid() {
        let n = Nonces::new(&[7; 32], 600);
        let t0 = Time::from_unix_secs(1_000_000);
        for bad in [
            "",
            "x",
            "AAAAAAAAAAAAAAAA",
            "!!!!!!!!!!!!!!!!",
            "AAAAAAAAAAAAAAAAA",
        ] {
            assert!(!n.is_valid(bad, t0, &tuple(1)), "{bad:?}");
        }
        let mut forged = n.issue(t0, &tuple(1)).into_bytes();
        forged[15] = if forged[15] == b'A' { b'B' } else { b'A' };
        assert!(!n.is_valid(std::str::from_utf8(&forged).unwrap(), t0, &tuple(1)));
    }
}
