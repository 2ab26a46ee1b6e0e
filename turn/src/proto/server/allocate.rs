//! Allocate and Refresh (RFC 8656 §7.2, §7.3): the Allocate request's attribute rules
//! (REQUESTED-TRANSPORT, address families, EVEN-PORT, RESERVATION-TOKEN), quotas, the granted
//! lifetime, and refreshing or deleting an allocation. The answer to Allocate is sent once the
//! driver has opened the relay sockets ([`Server::handle_relay_opened`]).

use std::time::Duration;

use stun_types::attribute::AttributeStaticType;
use stun_types::message::{Message, StunParseError};
use turn_types::attribute::{
    AdditionalAddressFamily, DontFragment, EvenPort, Lifetime, RequestedAddressFamily,
    RequestedTransport, ReservationToken,
};
use turn_types::message::ALLOCATE;
use turn_types::AddressFamily;

use super::auth::{has_integrity, Authed};
use super::reply::reply_opts;
use super::{unknown_required, Server};
use crate::proto::allocation::{AllocId, Allocation, Phase, Usage};
use crate::proto::{
    CloseReason, Command, Family, FiveTuple, RelayRequest, RequestError, ServerConfig, Time,
};

/// What a request on an allocation answers (Refresh, CreatePermission, ChannelBind):
/// `Ok(Some(seconds))` with a LIFETIME, `Ok(None)` without.
pub(super) type Answer = Result<Option<u32>, RequestError>;

/// What an admitted Allocate asks the driver for.
struct Admitted {
    /// The family of its (first) relayed address.
    primary: Family,
    /// An IPv6 address besides the IPv4 one.
    dual: bool,
    even_port: bool,
    /// Why an IPv6 address asked for is not given, for the ADDRESS-ERROR-CODE.
    v6_error: Option<RequestError>,
}

impl Server {
    /// Allocate (RFC 8656 §7.2).
    pub(super) fn allocate(&mut self, now: Time, tuple: FiveTuple, msg: &Message<'_>) {
        let txid = msg.transaction_id();
        if let Some(&id) = self.by_tuple.get(&tuple) {
            // A retransmission of the request that created it: the same answer, or none yet
            // while its socket is opening.
            if self.get(id).is_some_and(|a| a.created_by == txid) {
                self.replay(tuple, txid);
                return;
            }
        }
        if !has_integrity(msg) && !msg.has_attribute(RequestedTransport::TYPE) {
            // Malformed whoever sends it: a 40-byte 400 (ERROR-CODE with its reason phrase)
            // rather than a challenge (72 bytes with a short realm) to a possibly spoofed
            // 20-byte request, and within the source's budget like any unauthenticated answer.
            if self.unauthenticated_budget(now, &tuple) {
                let reply = reply_opts(msg, None);
                self.refuse(tuple, ALLOCATE, txid, &RequestError::BadRequest, &reply);
            }
            return;
        }
        let auth = match self.authenticate(now, tuple, msg) {
            Ok(auth) => auth,
            Err(e) => return self.refuse_unauthenticated(now, tuple, msg, &e),
        };
        let reply = reply_opts(msg, Some(&auth.key));
        let Admitted {
            primary,
            dual,
            even_port,
            v6_error,
        } = match self.admit(tuple, msg, &auth) {
            Ok(admitted) => admitted,
            Err(e) => return self.refuse(tuple, ALLOCATE, txid, &e, &reply),
        };
        let lifetime = allocate_lifetime(&self.config, msg);
        let user_slot = self.users.add(auth.username.user());
        let fingerprint = reply.fingerprint;
        let id = self.insert(|_| Allocation {
            tuple,
            username: auth.username,
            key: auth.key.clone(),
            created_by: txid,
            phase: Phase::Opening {
                lifetime,
                fingerprint,
                waiting: [primary == Family::V4 || dual, primary == Family::V6 || dual],
                v6_error,
            },
            primary,
            relayed: [None; 2],
            advertised: [None; 2],
            created: now,
            expires: now + lifetime,
            permissions: Default::default(),
            channels: Default::default(),
            usage: Usage::default(),
            bucket: Default::default(),
            user_slot,
            responses: Default::default(),
        });
        self.tombstones.remove(&tuple);
        self.by_tuple.insert(tuple, id);
        for family in [Family::V4, Family::V6] {
            if family == primary || dual {
                let request = RelayRequest {
                    id,
                    family,
                    even_port,
                };
                self.commands.push_back(Command::OpenRelay(request));
            }
        }
    }

    /// The Allocate request's attribute rules (RFC 8656 §7.2), then the quotas.
    fn admit(
        &self,
        tuple: FiveTuple,
        msg: &Message<'_>,
        auth: &Authed,
    ) -> Result<Admitted, RequestError> {
        if self.by_tuple.contains_key(&tuple) {
            return Err(RequestError::AllocationMismatch);
        }
        if let Some(unknown) = unknown_required(msg) {
            return Err(RequestError::UnknownAttributes(unknown));
        }
        match msg.attribute::<RequestedTransport>() {
            Ok(t) if t.protocol() == RequestedTransport::UDP => {}
            Ok(_) => return Err(RequestError::UnsupportedTransport),
            Err(_) => return Err(RequestError::BadRequest),
        }
        let _ = msg.has_attribute(DontFragment::TYPE); // Accepted: the kernel's PMTU default.
        let token = msg.has_attribute(ReservationToken::TYPE);
        let even = msg.has_attribute(EvenPort::TYPE);
        // Present but unparseable (an unknown family): 440 for REQUESTED-ADDRESS-FAMILY, 400 for
        // ADDITIONAL-ADDRESS-FAMILY, which may only ask for IPv6 (RFC 8656 §7.2, §18.11-12).
        let requested = match msg.attribute::<RequestedAddressFamily>() {
            Ok(r) => Some(r),
            Err(StunParseError::MissingAttribute(_)) => None,
            Err(_) => return Err(RequestError::AddressFamilyNotSupported),
        };
        let additional = match msg.attribute::<AdditionalAddressFamily>() {
            Ok(a) if a.family() == AddressFamily::IPV6 => Some(a),
            Err(StunParseError::MissingAttribute(_)) => None,
            _ => return Err(RequestError::BadRequest),
        };
        if token && (even || requested.is_some() || additional.is_some()) {
            return Err(RequestError::BadRequest);
        }
        if requested.is_some() && additional.is_some() {
            return Err(RequestError::BadRequest);
        }
        // EVEN-PORT without its R bit only asks for an even port, which is easy to give. With
        // R, or a RESERVATION-TOKEN, it asks for a reserved pair: not offered here, and RFC 8656
        // §7.2 says 508 for a reservation the server cannot make.
        let even_port = match msg.attribute::<EvenPort>() {
            Ok(e) if e.requested() => return Err(RequestError::InsufficientCapacity),
            Ok(_) => true,
            Err(_) if even => return Err(RequestError::BadRequest),
            Err(_) => false,
        };
        if token {
            return Err(RequestError::InsufficientCapacity);
        }
        // RFC 8656 §7.2: IPv4 unless REQUESTED-ADDRESS-FAMILY says IPv6, 440 when this relay
        // has no address of that family; ADDITIONAL-ADDRESS-FAMILY (IPv6) adds an IPv6 address
        // when there is one, and an ADDRESS-ERROR-CODE 440 in the success answer when not.
        let primary = match requested.map(|r| r.family()) {
            Some(AddressFamily::IPV6) => Family::V6,
            _ => Family::V4,
        };
        if self.config.relay_ip(primary).is_none() {
            return Err(RequestError::AddressFamilyNotSupported);
        }
        let dual = additional.is_some() && self.config.relay_ip(Family::V6).is_some();
        let v6_error =
            (additional.is_some() && !dual).then_some(RequestError::AddressFamilyNotSupported);
        let held = self.users.held(auth.username.user());
        if held >= self.config.user_quota {
            return Err(RequestError::AllocationQuotaReached { total: false });
        }
        if self.count >= self.config.total_quota as usize {
            return Err(RequestError::AllocationQuotaReached { total: true });
        }
        Ok(Admitted {
            primary,
            dual,
            even_port,
            v6_error,
        })
    }

    /// Refresh (RFC 8656 §7.3). With an `expired` credential, the lifetime granted ends
    /// `max_allocation_life` after the allocation's creation at the latest.
    pub(super) fn refresh(
        &mut self,
        now: Time,
        id: AllocId,
        msg: &Message<'_>,
        expired: bool,
    ) -> Answer {
        if let Ok(r) = msg.attribute::<RequestedAddressFamily>() {
            // RFC 8656 §7.3: a family the allocation does not have is a mismatch.
            let family = if r.family() == AddressFamily::IPV6 {
                Family::V6
            } else {
                Family::V4
            };
            if !self.get(id).is_some_and(|a| a.has_relay(family)) {
                return Err(RequestError::PeerAddressFamilyMismatch);
            }
        }
        let requested = msg.attribute::<Lifetime>().ok().map(|l| l.seconds());
        if requested == Some(0) {
            self.close(now, id, CloseReason::Deleted);
            return Ok(Some(0));
        }
        let mut lifetime = granted_lifetime(&self.config, requested);
        if let Some(a) = self.get(id).filter(|_| expired) {
            lifetime = lifetime.min(self.grace_left(a, now));
        }
        let expires = now + lifetime;
        if let Some(a) = self.get_mut(id) {
            let old = std::mem::replace(&mut a.expires, expires);
            self.expiries.remove(&(old, id));
            self.expiries.insert((expires, id));
        }
        Ok(Some(lifetime.as_secs() as u32))
    }
}

/// The allocation lifetime (RFC 8656 §7.2): the client's wish, at least the default, at most
/// the maximum.
fn allocate_lifetime(config: &ServerConfig, msg: &Message<'_>) -> Duration {
    granted_lifetime(
        config,
        msg.attribute::<Lifetime>().ok().map(|l| l.seconds()),
    )
}

/// RFC 8656 §7.2 and §7.3 (RFC 5766 §7.2): the requested lifetime (the default when none),
/// at most the maximum, and never less than the default.
fn granted_lifetime(config: &ServerConfig, requested_secs: Option<u32>) -> Duration {
    let requested = requested_secs.map_or(config.default_lifetime, |s| {
        Duration::from_secs(u64::from(s))
    });
    requested
        .min(config.max_lifetime)
        .max(config.default_lifetime.min(config.max_lifetime))
}
