//! A connection's SRTP master keys, as its DTLS handshake exported them.
//!
//! str0m keeps its keys to itself. Its crypto is pluggable, so [`provider`] is the usual one
//! but for DTLS, whose instances are wrapped: each notes the keying material and profile it
//! hands str0m in a [`KeySlot`] of its own. Whoever builds a connection takes that slot from
//! [`take_last_slot`] right after `RtcConfig::build` (which makes the DTLS instance, on this
//! thread), and reads the keys from it once the handshake is done.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
};
use str0m::crypto::{CryptoError, CryptoProvider};

use super::Keys;

/// Where one DTLS instance puts its keys once it has them.
#[derive(Clone, Debug, Default)]
pub struct KeySlot(Arc<Mutex<Option<Keys>>>);

impl KeySlot {
    /// The connection's keys, once its handshake is done.
    pub fn get(&self) -> Option<Keys> {
        self.0.lock().ok()?.clone()
    }

    fn set(&self, keys: Keys) {
        if let Ok(mut k) = self.0.lock() {
            *k = Some(keys);
        }
    }
}

thread_local! {
    /// The slot of the DTLS instance last made on this thread.
    static LAST: RefCell<Option<KeySlot>> = const { RefCell::new(None) };
}

/// The slot of the DTLS instance last made on this thread (by `RtcConfig::build`), once.
pub fn take_last_slot() -> Option<KeySlot> {
    LAST.with(|l| l.borrow_mut().take())
}

/// str0m's crypto provider for this build (aws-lc-rs), its DTLS instances noting their keys.
pub fn provider() -> CryptoProvider {
    let mut p = str0m::crypto::from_feature_flags();
    let _ = INNER.set(p.dtls_provider);
    p.dtls_provider = &NOTING;
    p
}

static INNER: OnceLock<&'static dyn DtlsProvider> = OnceLock::new();
static NOTING: Noting = Noting;

#[derive(Debug)]
struct Noting;

impl Noting {
    fn inner() -> &'static dyn DtlsProvider {
        *INNER.get_or_init(|| str0m::crypto::from_feature_flags().dtls_provider)
    }
}

impl DtlsProvider for Noting {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        Noting::inner().generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let inner = Noting::inner().new_dtls(cert, now, dtls_version, mtu)?;
        let slot = KeySlot::default();
        LAST.with(|l| *l.borrow_mut() = Some(slot.clone()));
        Ok(Box::new(NotingInstance { inner, slot }))
    }

    fn is_test(&self) -> bool {
        Noting::inner().is_test()
    }
}

#[derive(Debug)]
struct NotingInstance {
    inner: Box<dyn DtlsInstance>,
    slot: KeySlot,
}

impl DtlsInstance for NotingInstance {
    fn set_active(&mut self, active: bool) {
        self.inner.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.inner.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        let out = self.inner.poll_output(buf);
        if let DtlsOutput::KeyingMaterial(material, profile) = &out {
            if let Some(keys) = Keys::new(*profile, material, self.inner.is_active()) {
                self.slot.set(keys);
            }
        }
        out
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.inner.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.inner.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.inner.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.inner.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.inner.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.inner.close()
    }
}
