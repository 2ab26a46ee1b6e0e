//! SRTP and SRTCP protection of our own (RFC 3711; the AEAD AES-GCM profiles, RFC 7714), keyed
//! from a connection's DTLS-SRTP exporter (RFC 5764) as str0m's DTLS produced it ([`keys`]).
//!
//! str0m protects what it sends itself. This is for media the SFU forwards without handing
//! each packet to a str0m connection per subscriber (most of the CPU a forwarded packet costs
//! in a big room: `bench/sfu.sh`): the same keys, the same transforms, so a receiver cannot
//! tell which of the two protected a packet. The ciphers are the crypto provider's (aws-lc-rs,
//! as for str0m); what is ours is the framing: the key derivation (RFC 3711 section 4.3), the
//! initialisation vectors, the authenticated portions and the SRTCP index.
//!
//! Index bookkeeping is the caller's: a sender numbers its packets; a receiver estimates each
//! packet's index from its sequence number with one [`Rollover`] per SSRC.

pub mod keys;
mod rollover;

pub use rollover::Rollover;

use std::fmt;

use str0m::crypto::dtls::SrtpProfile;
use str0m::crypto::{
    AeadAes128GcmCipher, AeadAes256GcmCipher, Aes128CmSha1_80Cipher, CryptoError, CryptoProvider,
    Sha1HmacProvider, SrtpProvider,
};

/// RFC 3711 section 4.3.1 key derivation labels: the encryption key, the authentication key
/// and the salt, for RTP and for RTCP.
const LABELS_RTP: Labels = Labels {
    key: 0,
    auth: 1,
    salt: 2,
};
const LABELS_RTCP: Labels = Labels {
    key: 3,
    auth: 4,
    salt: 5,
};

struct Labels {
    key: u8,
    auth: u8,
    salt: u8,
}

/// HMAC-SHA1 tag length of AES_CM_128_HMAC_SHA1_80, and its session authentication key's.
const CM_TAG: usize = 10;
const CM_AUTH_KEY: usize = 20;
/// AES-GCM's tag (RFC 7714 section 14.2: 16 octets for both key sizes).
const GCM_TAG: usize = 16;
/// The SRTCP trailer: the E flag and a 31-bit index.
const SRTCP_TRAILER: usize = 4;
/// RTCP's clear prefix: its first header word and the sender's SSRC.
const RTCP_CLEAR: usize = 8;

/// Failures: a packet too short for what it claims, or a cipher that refused.
#[derive(Debug, PartialEq, Eq)]
pub enum SrtpError {
    Short,
    /// An unprotected packet's tag did not verify.
    Auth,
    Cipher(String),
}

impl fmt::Display for SrtpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SrtpError::Short => f.write_str("packet too short"),
            SrtpError::Auth => f.write_str("authentication failed"),
            SrtpError::Cipher(e) => write!(f, "cipher: {e}"),
        }
    }
}

impl std::error::Error for SrtpError {}

impl From<CryptoError> for SrtpError {
    fn from(e: CryptoError) -> SrtpError {
        SrtpError::Cipher(e.to_string())
    }
}

/// One connection's SRTP master keys as DTLS exported them, the profile it negotiated, and
/// which end of the handshake we were.
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    profile: SrtpProfile,
    material: Vec<u8>,
    /// We were the DTLS client: the client's half is what we send with.
    client: bool,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keys")
            .field("profile", &self.profile)
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// Key and salt lengths of a profile's masters.
fn lengths(profile: SrtpProfile) -> (usize, usize) {
    match profile {
        SrtpProfile::AES128_CM_SHA1_80 => (16, 14),
        SrtpProfile::AEAD_AES_128_GCM => (16, 12),
        _ => (32, 12),
    }
}

impl Keys {
    /// The exporter's output for `profile` (client key, server key, client salt, server salt:
    /// RFC 5764 section 4.2); `None` if its length is not that profile's.
    pub fn new(profile: SrtpProfile, material: &[u8], client: bool) -> Option<Keys> {
        let (k, s) = lengths(profile);
        (material.len() == 2 * (k + s)).then(|| Keys {
            profile,
            material: material.to_vec(),
            client,
        })
    }

    pub fn profile(&self) -> SrtpProfile {
        self.profile
    }

    /// The master key and salt of what we send (`local`) or of what the peer sends.
    fn master(&self, local: bool) -> (&[u8], &[u8]) {
        let (k, s) = lengths(self.profile);
        let m = &self.material;
        if local == self.client {
            (&m[..k], &m[2 * k..2 * k + s])
        } else {
            (&m[k..2 * k], &m[2 * k + s..])
        }
    }

    /// The transforms that protect what we send.
    pub fn sender(&self, crypto: &CryptoProvider) -> Context {
        self.context(crypto, true, true)
    }

    /// The transforms that check and decrypt what the peer sends.
    pub fn receiver(&self, crypto: &CryptoProvider) -> Context {
        self.context(crypto, false, false)
    }

    /// The transforms that check and decrypt what we send, as the peer does.
    pub fn reader_of_sent(&self, crypto: &CryptoProvider) -> Context {
        self.context(crypto, true, false)
    }

    fn context(&self, crypto: &CryptoProvider, local: bool, encrypt: bool) -> Context {
        let (key, salt) = self.master(local);
        let srtp = crypto.srtp_provider;
        Context {
            rtp: Transform::new(srtp, key, salt, &LABELS_RTP, encrypt),
            rtcp: Transform::new(srtp, key, salt, &LABELS_RTCP, encrypt),
            hmac: crypto.sha1_hmac_provider,
            srtcp_index: 0,
        }
    }
}

/// The session keys of one direction of one connection: RTP's and RTCP's.
pub struct Context {
    rtp: Transform,
    rtcp: Transform,
    hmac: &'static dyn Sha1HmacProvider,
    /// The next SRTCP index (31 bits) this end sends with.
    srtcp_index: u32,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("srtcp_index", &self.srtcp_index)
            .finish_non_exhaustive()
    }
}

/// A cipher with its session salt (and, for AES-CM, its authentication key).
enum Transform {
    Cm {
        cipher: Box<dyn Aes128CmSha1_80Cipher>,
        salt: [u8; 14],
        auth: [u8; CM_AUTH_KEY],
    },
    Gcm {
        cipher: Gcm,
        salt: [u8; 12],
    },
}

/// AES-GCM with a 128- or 256-bit key.
enum Gcm {
    A128(Box<dyn AeadAes128GcmCipher>),
    A256(Box<dyn AeadAes256GcmCipher>),
}

impl Gcm {
    /// Encrypts `input` into `out` (its length and the tag's).
    fn seal(
        &mut self,
        iv: &[u8; 12],
        aad: &[u8],
        input: &[u8],
        out: &mut [u8],
    ) -> Result<(), SrtpError> {
        match self {
            Gcm::A128(c) => c.encrypt(iv, aad, input, out)?,
            Gcm::A256(c) => c.encrypt(iv, aad, input, out)?,
        }
        Ok(())
    }

    /// Checks and decrypts `input` (ciphertext and tag) into `out`: the clear length.
    fn open(
        &mut self,
        iv: &[u8; 12],
        aads: &[&[u8]],
        input: &[u8],
        out: &mut [u8],
    ) -> Result<usize, SrtpError> {
        let opened = match self {
            Gcm::A128(c) => c.decrypt(iv, aads, input, out),
            Gcm::A256(c) => c.decrypt(iv, aads, input, out),
        };
        opened.map_err(|_| SrtpError::Auth)
    }
}

impl Transform {
    /// The session transform of `labels` from a master key and salt.
    fn new(
        srtp: &'static dyn SrtpProvider,
        master_key: &[u8],
        master_salt: &[u8],
        labels: &Labels,
        encrypt: bool,
    ) -> Transform {
        let derive = |label: u8, out: &mut [u8]| derive(srtp, master_key, master_salt, label, out);
        let (key_label, auth_label, salt_label) = (labels.key, labels.auth, labels.salt);
        match (master_key.len(), master_salt.len()) {
            (16, 14) => {
                let (mut key, mut salt, mut auth) = ([0; 16], [0; 14], [0; CM_AUTH_KEY]);
                derive(key_label, &mut key);
                derive(salt_label, &mut salt);
                derive(auth_label, &mut auth);
                let cipher = srtp.aes_128_cm_sha1_80().create_cipher(key, encrypt);
                Transform::Cm { cipher, salt, auth }
            }
            (16, _) => {
                let (mut key, mut salt) = ([0; 16], [0; 12]);
                derive(key_label, &mut key);
                derive(salt_label, &mut salt);
                let cipher = Gcm::A128(srtp.aead_aes_128_gcm().create_cipher(key, encrypt));
                Transform::Gcm { cipher, salt }
            }
            _ => {
                let (mut key, mut salt) = ([0; 32], [0; 12]);
                derive(key_label, &mut key);
                derive(salt_label, &mut salt);
                let cipher = Gcm::A256(srtp.aead_aes_256_gcm().create_cipher(key, encrypt));
                Transform::Gcm { cipher, salt }
            }
        }
    }

    /// Bytes protection adds to an RTP packet.
    fn tag_len(&self) -> usize {
        match self {
            Transform::Cm { .. } => CM_TAG,
            _ => GCM_TAG,
        }
    }
}

/// RFC 3711 section 4.3.3's PRF (AES in counter mode keyed with the master key) over
/// `master_salt` XOR the label (key derivation rate 0: the index part is zero), into `out`.
/// A 96-bit salt (RFC 7714) is taken times 2^16, as RFC 7714's erratum 4938 says.
fn derive(srtp: &dyn SrtpProvider, key: &[u8], salt: &[u8], label: u8, out: &mut [u8]) {
    let mut x = [0u8; 16];
    x[..salt.len()].copy_from_slice(salt);
    x[7] ^= label;
    for (i, chunk) in out.chunks_mut(16).enumerate() {
        x[14..].copy_from_slice(&(i as u16).to_be_bytes());
        // Room for backends that write a padding block after the one asked for.
        let mut block = [0u8; 32];
        if key.len() == 16 {
            srtp.srtp_aes_128_ecb_round(key, &x, &mut block);
        } else {
            srtp.srtp_aes_256_ecb_round(key, &x, &mut block);
        }
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}

/// AES-CM's counter block for `ssrc` and a 48-bit `index` (RFC 3711 section 4.1.1).
fn cm_iv(salt: &[u8; 14], ssrc: u32, index: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
        *b ^= s;
    }
    for (b, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
        *b ^= s;
    }
    iv
}

/// AES-GCM's nonce: the salt XOR 2 zero octets, the SSRC, and 6 octets of `tail` (RFC 7714
/// sections 8.1 and 9.1: the rollover counter and sequence number for RTP; 2 zero octets and
/// the SRTCP index for RTCP).
fn gcm_iv(salt: &[u8; 12], ssrc: u32, tail: [u8; 6]) -> [u8; 12] {
    let mut iv = *salt;
    for (b, s) in iv[2..6].iter_mut().zip(ssrc.to_be_bytes()) {
        *b ^= s;
    }
    for (b, s) in iv[6..].iter_mut().zip(tail) {
        *b ^= s;
    }
    iv
}

/// The length of an RTP packet's header: fixed part, CSRCs, extension; `None` if it does not
/// fit in `packet` or is not version 2.
pub fn rtp_header_len(packet: &[u8]) -> Option<usize> {
    let first = *packet.first()?;
    if first >> 6 != 2 || packet.len() < 12 {
        return None;
    }
    let mut len = 12 + 4 * usize::from(first & 0x0f);
    if first & 0x10 != 0 {
        let words = packet.get(len + 2..len + 4)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    (len <= packet.len()).then_some(len)
}

/// An RTP packet's header length and SSRC.
fn rtp_parts(packet: &[u8]) -> Result<(usize, u32), SrtpError> {
    let header = rtp_header_len(packet).ok_or(SrtpError::Short)?;
    Ok((header, ssrc_at(packet, 8).ok_or(SrtpError::Short)?))
}

fn ssrc_at(packet: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(packet.get(at..at + 4)?.try_into().ok()?))
}

impl Context {
    /// Bytes [`Context::protect_rtp`] adds to a packet.
    pub fn rtp_overhead(&self) -> usize {
        self.rtp.tag_len()
    }

    /// Protects RTP `packet` (header and clear payload) with packet index `index` (the
    /// rollover counter times 2^16 plus the sequence number), into `out` (cleared first).
    pub fn protect_rtp(
        &mut self,
        packet: &[u8],
        index: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), SrtpError> {
        let (header, _) = rtp_parts(packet)?;
        let (head, payload) = packet.split_at(header);
        out.clear();
        out.extend_from_slice(head);
        self.protect_rtp_payload(out, payload, index)
    }

    /// Protects an RTP packet whose header is already in `out` (and nothing else), its clear
    /// `payload` apart: appends the encrypted payload and the tag. The forwarding path's form:
    /// a payload shared by many subscribers is read where it is, never copied in clear.
    pub fn protect_rtp_payload(
        &mut self,
        out: &mut Vec<u8>,
        payload: &[u8],
        index: u64,
    ) -> Result<(), SrtpError> {
        let (header, ssrc) = rtp_parts(out)?;
        if header != out.len() {
            return Err(SrtpError::Short);
        }
        let roc = (index >> 16) as u32;
        let start = out.len();
        out.resize(start + payload.len() + self.rtp.tag_len(), 0);
        let (head, body) = out.split_at_mut(start);
        match &mut self.rtp {
            Transform::Cm { cipher, salt, auth } => {
                let iv = cm_iv(salt, ssrc, index);
                let (sealed, tag_out) = body.split_at_mut(payload.len());
                cipher.encrypt(&iv, payload, sealed)?;
                let tag = self
                    .hmac
                    .sha1_hmac(auth, &[head, sealed, &roc.to_be_bytes()]);
                tag_out.copy_from_slice(&tag[..CM_TAG]);
            }
            Transform::Gcm { cipher, salt } => {
                let iv = gcm_iv(salt, ssrc, rtp_tail(roc, index));
                cipher.seal(&iv, head, payload, body)?;
            }
        }
        Ok(())
    }

    /// Checks and decrypts SRTP `packet` with packet index `index`, into `out` (the header and
    /// the clear payload).
    pub fn unprotect_rtp(
        &mut self,
        packet: &[u8],
        index: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), SrtpError> {
        let (header, ssrc) = rtp_parts(packet)?;
        let tag_len = self.rtp.tag_len();
        if packet.len() < header + tag_len {
            return Err(SrtpError::Short);
        }
        let roc = (index >> 16) as u32;
        let (head, body) = packet.split_at(header);
        out.clear();
        out.extend_from_slice(head);
        match &mut self.rtp {
            Transform::Cm { cipher, salt, auth } => {
                let (sealed, tag) = packet.split_at(packet.len() - CM_TAG);
                let expect = self.hmac.sha1_hmac(auth, &[sealed, &roc.to_be_bytes()]);
                if !same(&expect[..CM_TAG], tag) {
                    return Err(SrtpError::Auth);
                }
                let ciphertext = &sealed[header..];
                out.resize(header + ciphertext.len(), 0);
                cipher.decrypt(&cm_iv(salt, ssrc, index), ciphertext, &mut out[header..])?;
            }
            Transform::Gcm { cipher, salt } => {
                let iv = gcm_iv(salt, ssrc, rtp_tail(roc, index));
                out.resize(header + body.len(), 0);
                let n = cipher.open(&iv, &[head], body, &mut out[header..])?;
                out.truncate(header + n);
            }
        }
        Ok(())
    }

    /// Protects compound RTCP `packet` with this end's next SRTCP index, into `out`.
    pub fn protect_rtcp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<(), SrtpError> {
        let index = self.srtcp_index;
        self.srtcp_index = (index + 1) & 0x7fff_ffff;
        self.protect_rtcp_at(packet, index, out)
    }

    /// Protects compound RTCP `packet` with SRTCP index `index` (31 bits), into `out`.
    pub fn protect_rtcp_at(
        &mut self,
        packet: &[u8],
        index: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), SrtpError> {
        let ssrc = ssrc_at(packet, 4).ok_or(SrtpError::Short)?;
        let (head, body) = packet.split_at(RTCP_CLEAR);
        // The E flag: the payload is encrypted.
        let trailer = (index | 0x8000_0000).to_be_bytes();
        out.clear();
        out.extend_from_slice(head);
        let start = out.len();
        let sealed = body.len() + self.rtcp.tag_len();
        out.resize(start + sealed + SRTCP_TRAILER, 0);
        let end = start + body.len();
        match &mut self.rtcp {
            Transform::Cm { cipher, salt, auth } => {
                let iv = cm_iv(salt, ssrc, u64::from(index));
                cipher.encrypt(&iv, body, &mut out[start..end])?;
                out[end..end + SRTCP_TRAILER].copy_from_slice(&trailer);
                let tag = self.hmac.sha1_hmac(auth, &[&out[..end + SRTCP_TRAILER]]);
                out[end + SRTCP_TRAILER..].copy_from_slice(&tag[..CM_TAG]);
            }
            Transform::Gcm { cipher, salt } => {
                let iv = gcm_iv(salt, ssrc, rtcp_tail(index));
                let aad = [head, &trailer[..]].concat();
                cipher.seal(&iv, &aad, body, &mut out[start..start + sealed])?;
                out[start + sealed..].copy_from_slice(&trailer);
            }
        }
        Ok(())
    }

    /// Checks and decrypts SRTCP `packet`, into `out`; returns its SRTCP index.
    pub fn unprotect_rtcp(&mut self, packet: &[u8], out: &mut Vec<u8>) -> Result<u32, SrtpError> {
        let tag_len = self.rtcp.tag_len();
        let ssrc = ssrc_at(packet, 4).ok_or(SrtpError::Short)?;
        if packet.len() < RTCP_CLEAR + tag_len + SRTCP_TRAILER {
            return Err(SrtpError::Short);
        }
        let head = &packet[..RTCP_CLEAR];
        out.clear();
        out.extend_from_slice(head);
        match &mut self.rtcp {
            Transform::Cm { cipher, salt, auth } => {
                let (sealed, tag) = packet.split_at(packet.len() - CM_TAG);
                let expect = self.hmac.sha1_hmac(auth, &[sealed]);
                if !same(&expect[..CM_TAG], tag) {
                    return Err(SrtpError::Auth);
                }
                let (body, trailer) =
                    sealed[RTCP_CLEAR..].split_at(sealed.len() - RTCP_CLEAR - SRTCP_TRAILER);
                let index = u32::from_be_bytes(trailer.try_into().expect("4 bytes")) & 0x7fff_ffff;
                out.resize(RTCP_CLEAR + body.len(), 0);
                let iv = cm_iv(salt, ssrc, u64::from(index));
                cipher.decrypt(&iv, body, &mut out[RTCP_CLEAR..])?;
                Ok(index)
            }
            Transform::Gcm { cipher, salt } => {
                let (sealed, trailer) = packet.split_at(packet.len() - SRTCP_TRAILER);
                let index = u32::from_be_bytes(trailer.try_into().expect("4 bytes")) & 0x7fff_ffff;
                let iv = gcm_iv(salt, ssrc, rtcp_tail(index));
                let body = &sealed[RTCP_CLEAR..];
                out.resize(RTCP_CLEAR + body.len(), 0);
                let n = cipher.open(&iv, &[head, trailer], body, &mut out[RTCP_CLEAR..])?;
                out.truncate(RTCP_CLEAR + n);
                Ok(index)
            }
        }
    }
}

/// Whether two tags are equal, in time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The last 6 octets of an RTP nonce: the rollover counter and the sequence number.
fn rtp_tail(roc: u32, index: u64) -> [u8; 6] {
    let mut t = [0u8; 6];
    t[..4].copy_from_slice(&roc.to_be_bytes());
    t[4..].copy_from_slice(&(index as u16).to_be_bytes());
    t
}

/// The last 6 octets of an RTCP nonce: two zero octets and the SRTCP index.
fn rtcp_tail(index: u32) -> [u8; 6] {
    let mut t = [0u8; 6];
    t[2..].copy_from_slice(&(index & 0x7fff_ffff).to_be_bytes());
    t
}

#[cfg(test)]
mod tests;
