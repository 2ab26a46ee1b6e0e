//! Why the core refuses a request (RFC 8489 §6.3.4, RFC 8656 §7–11): one variant per kind of
//! refusal, mapped here once to its STUN error code and reason phrase, and to the [`Event`] it
//! is counted as.

use stun_types::attribute::{ErrorCode, UnknownAttributes};

use super::{AuthFailure, Event, Refusal};

/// Why a request was refused. The client sees only the error code (and, for
/// [`RequestError::UnknownAttributes`], the list); the fields are for metrics and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// Malformed, an unknown method, or an attribute missing, out of range or contradicting
    /// another (400).
    BadRequest,
    /// Comprehension-required attributes this server does not understand (420), listed in
    /// the answer (RFC 8489 §6.3.1).
    UnknownAttributes(UnknownAttributes),
    /// No MESSAGE-INTEGRITY: the answer is a challenge with the realm and a nonce (401). Not
    /// a failure: it is how every client starts.
    Unauthenticated,
    /// Authentication failed: a challenge (401; 438 for a stale nonce), 400 when
    /// credentials are missing beside MESSAGE-INTEGRITY, 441 for another username than the
    /// allocation's.
    AuthFailed(AuthFailure),
    /// The peer policy refused a peer (403).
    Forbidden { reason: Refusal },
    /// No allocation on this 5-tuple for a request that needs one, or one already for an
    /// Allocate (437).
    AllocationMismatch,
    /// A REQUESTED-ADDRESS-FAMILY that is unknown or that this relay has no address of; in an
    /// ADDRESS-ERROR-CODE, the IPv6 address asked for with ADDITIONAL-ADDRESS-FAMILY (440).
    AddressFamilyNotSupported,
    /// A REQUESTED-TRANSPORT other than UDP (442).
    UnsupportedTransport,
    /// A peer, or a Refresh's REQUESTED-ADDRESS-FAMILY, of a family the allocation has no
    /// relayed address of (443).
    PeerAddressFamilyMismatch,
    /// The user's allocation quota, or the relay's (`total`) (486).
    AllocationQuotaReached { total: bool },
    /// A permission or channel table full, a port reservation (not offered), or a relay socket
    /// that could not be opened (508).
    InsufficientCapacity,
}

impl RequestError {
    /// The STUN error code (RFC 8489 §14.8, RFC 8656 §19).
    pub fn code(&self) -> u16 {
        match self {
            RequestError::BadRequest | RequestError::AuthFailed(AuthFailure::MissingAttributes) => {
                ErrorCode::BAD_REQUEST
            }
            RequestError::UnknownAttributes(_) => ErrorCode::UNKNOWN_ATTRIBUTE,
            RequestError::AuthFailed(AuthFailure::StaleNonce) => ErrorCode::STALE_NONCE,
            RequestError::AuthFailed(AuthFailure::WrongCredentials) => ErrorCode::WRONG_CREDENTIALS,
            RequestError::Unauthenticated | RequestError::AuthFailed(_) => ErrorCode::UNAUTHORIZED,
            RequestError::Forbidden { .. } => ErrorCode::FORBIDDEN,
            RequestError::AllocationMismatch => ErrorCode::ALLOCATION_MISMATCH,
            RequestError::AddressFamilyNotSupported => ErrorCode::ADDRESS_FAMILY_NOT_SUPPORTED,
            RequestError::UnsupportedTransport => ErrorCode::UNSUPPORTED_TRANSPORT_PROTOCOL,
            RequestError::PeerAddressFamilyMismatch => ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH,
            RequestError::AllocationQuotaReached { .. } => ErrorCode::ALLOCATION_QUOTA_REACHED,
            RequestError::InsufficientCapacity => ErrorCode::INSUFFICIENT_CAPACITY,
        }
    }

    /// Whether the answer is a challenge (401, 438): REALM and a fresh NONCE, no reason
    /// phrase, and over UDP only so many per source ([`limit`](super::limit)). It is what an
    /// unauthenticated source can make the relay send, so it must not amplify.
    pub fn is_challenge(&self) -> bool {
        matches!(
            self.code(),
            ErrorCode::UNAUTHORIZED | ErrorCode::STALE_NONCE
        )
    }

    /// The ERROR-CODE attribute: the RFC's standard reason phrase, never a detail; none for a
    /// challenge.
    pub(crate) fn error_code(&self) -> Option<ErrorCode> {
        let code = self.code();
        let reason = if self.is_challenge() {
            ""
        } else {
            ErrorCode::default_reason_for_code(code)
        };
        // Fails only for a code outside 300–699, which none of the above is.
        ErrorCode::new(code, reason).ok()
    }

    /// What the refusal is counted as, if anything.
    pub fn event(&self) -> Option<Event> {
        match self {
            RequestError::AuthFailed(failure) => Some(Event::AuthFailed(*failure)),
            RequestError::Forbidden { reason } => Some(Event::PeerRefused(*reason)),
            RequestError::AllocationQuotaReached { total } => {
                Some(Event::QuotaReached { total: *total })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What each refusal puts on the wire, in numbers and words (RFC 8489 §14.8, RFC 8656
    /// §19; none for a challenge), and the event it counts as.
    #[test]
    fn each_refusal_has_its_code_phrase_and_event() {
        use AuthFailure::*;
        let auth = RequestError::AuthFailed;
        let forbidden = |reason| RequestError::Forbidden { reason };
        let quota = |total| RequestError::AllocationQuotaReached { total };
        let unknown = UnknownAttributes::new(&[0x0030.into()]);
        let wire = [
            (RequestError::BadRequest, "400 Bad Request"),
            (
                RequestError::UnknownAttributes(unknown),
                "420 Unknown Attribute",
            ),
            (RequestError::Unauthenticated, "401 "),
            (auth(MissingAttributes), "400 Bad Request"),
            (auth(StaleNonce), "438 "),
            (auth(WrongRealm), "401 "),
            (auth(MalformedUsername), "401 "),
            (auth(Expired), "401 "),
            (auth(BadIntegrity), "401 "),
            (auth(WrongCredentials), "441 Wrong Credentials"),
            (forbidden(Refusal::Reserved("loopback")), "403 Forbidden"),
            (RequestError::AllocationMismatch, "437 Allocation Mismatch"),
            (
                RequestError::AddressFamilyNotSupported,
                "440 Address Family Not Supported",
            ),
            (
                RequestError::UnsupportedTransport,
                "442 Unsupported Transport Protocol",
            ),
            (
                RequestError::PeerAddressFamilyMismatch,
                "443 Peer Address Family Mismatch",
            ),
            (quota(false), "486 Allocation Quota Reached"),
            (
                RequestError::InsufficientCapacity,
                "508 Insufficient Capacity",
            ),
        ];
        for (error, want) in wire {
            let attribute = error.error_code().expect("a valid ERROR-CODE");
            let got = format!("{} {}", attribute.code(), attribute.reason());
            assert_eq!(got, want, "{error:?}");
            assert_eq!(error.code(), attribute.code());
            assert_eq!(error.is_challenge(), want.ends_with(' '), "{error:?}");
            let counted = matches!(
                error,
                RequestError::AuthFailed(_)
                    | RequestError::Forbidden { .. }
                    | RequestError::AllocationQuotaReached { .. }
            );
            assert_eq!(error.event().is_some(), counted, "{error:?}");
        }
        // Counted as what they are.
        for failure in [
            MissingAttributes,
            StaleNonce,
            BadIntegrity,
            WrongCredentials,
        ] {
            assert_eq!(auth(failure).event(), Some(Event::AuthFailed(failure)));
        }
        let denied = Some(Event::PeerRefused(Refusal::Denied));
        assert_eq!(forbidden(Refusal::Denied).event(), denied);
        let total = Some(Event::QuotaReached { total: true });
        assert_eq!(quota(true).event(), total);
    }
}
