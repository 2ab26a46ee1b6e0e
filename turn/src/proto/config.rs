//! What the core is configured with.

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use super::bandwidth::BandwidthCaps;
use super::policy::PeerPolicy;
use super::Family;

/// The relay's settings, as the core needs them. The daemon builds this from `[turn]`.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// REALM sent in challenges and expected back (`turn.realm`).
    pub realm: String,
    /// The shared secret of the TURN REST credential scheme (`turn.secret`).
    pub secret: Vec<u8>,
    /// What separates the expiry from the user name in usernames
    /// (`turn.rest_api_separator`, coturn's `rest-api-separator`).
    pub rest_api_separator: char,
    /// Key for the stateless nonces. Random per process: nonces from before a restart are stale.
    pub nonce_key: [u8; 32],
    /// Seed for the transaction ids of Data indications (the core has no RNG of its own).
    pub seed: u64,
    /// How long a nonce stays valid (rounded up to the minute), then 438 Stale Nonce.
    pub nonce_lifetime: Duration,
    /// The addresses relay sockets bind (`turn.relay_ip`): at most one per address family.
    /// An IPv4 one serves the default allocations; an IPv6 one serves REQUESTED-ADDRESS-FAMILY
    /// IPv6 and the IPv6 half of dual allocations (RFC 8656 §7).
    pub relay_ips: Vec<IpAddr>,
    /// The public addresses advertised in XOR-RELAYED-ADDRESS when behind NAT
    /// (`turn.external_ip`), at most one per family; each stands for the relay address of its
    /// family.
    pub external_ips: Vec<IpAddr>,
    /// Other addresses of this host (listener and interface addresses). They are never peers
    /// unless `allow_peers` names them: a relay must not reach the services of its own box.
    pub host_ips: Vec<IpAddr>,
    /// Peers served inside this process (the SFU's media address): datagrams to them are
    /// handed over as [`ClientAction::Local`](crate::proto::ClientAction::Local), never sent on
    /// a socket, and no peer policy stands between them and a client that permitted them.
    pub local_peers: Vec<SocketAddr>,
    /// The relay port range (`turn.relay_ports`): own relayed addresses are recognised by it.
    pub relay_ports: RangeInclusive<u16>,
    /// `turn.allow_peers` / `turn.deny_peers` over the secure default.
    pub policy: PeerPolicy,
    /// Allocations one user may hold at once (`turn.user_quota`).
    pub user_quota: u32,
    /// Allocations the relay holds at once (`turn.total_quota`).
    pub total_quota: u32,
    /// Allocation lifetime when the client asks for none or less (RFC 8656: 10 minutes).
    pub default_lifetime: Duration,
    /// The longest allocation lifetime granted (RFC 8656 recommends 1 hour).
    pub max_lifetime: Duration,
    /// How long after its creation an allocation may still be refreshed once the credential
    /// that made it has expired (`turn.max_allocation_life`): a call outlives a short-lived
    /// credential by up to this, not indefinitely. Counted on the monotonic clock.
    pub max_allocation_life: Duration,
    /// Permission lifetime (RFC 8656 §9: 300 s, not negotiable).
    pub permission_lifetime: Duration,
    /// Channel binding lifetime (RFC 8656 §12: 600 s, not negotiable).
    pub channel_lifetime: Duration,
    /// Permissions one allocation may hold.
    pub max_permissions: usize,
    /// Channels one allocation may bind.
    pub max_channels: usize,
    /// Relayed bytes per second per allocation, per user and in total (none unless set).
    pub bandwidth: BandwidthCaps,
}

impl ServerConfig {
    /// The RFC's defaults, with the given realm, secret and relay address (add one of the
    /// other family to `relay_ips` for dual-stack relaying).
    pub fn new(realm: impl Into<String>, secret: impl Into<Vec<u8>>, relay_ip: IpAddr) -> Self {
        ServerConfig {
            realm: realm.into(),
            secret: secret.into(),
            rest_api_separator: super::credentials::DEFAULT_SEPARATOR,
            nonce_key: [0; 32],
            seed: 0,
            nonce_lifetime: Duration::from_secs(600),
            relay_ips: vec![relay_ip],
            external_ips: Vec::new(),
            host_ips: Vec::new(),
            local_peers: Vec::new(),
            relay_ports: 49152..=65535,
            policy: PeerPolicy::default(),
            user_quota: 10,
            total_quota: 10_000,
            default_lifetime: Duration::from_secs(600),
            max_lifetime: Duration::from_secs(3600),
            max_allocation_life: Duration::from_secs(12 * 3600),
            permission_lifetime: Duration::from_secs(300),
            channel_lifetime: Duration::from_secs(600),
            max_permissions: 128,
            max_channels: 128,
            bandwidth: BandwidthCaps::UNLIMITED,
        }
    }
}

impl ServerConfig {
    /// The relay address of a family, if relaying in it is configured.
    pub fn relay_ip(&self, family: Family) -> Option<IpAddr> {
        self.relay_ips
            .iter()
            .copied()
            .find(|ip| Family::of(*ip) == family)
    }

    /// The address advertised for relayed addresses of a family: the external one when set.
    pub fn advertised_ip(&self, family: Family) -> Option<IpAddr> {
        self.external_ips
            .iter()
            .copied()
            .find(|ip| Family::of(*ip) == family)
            .or_else(|| self.relay_ip(family))
    }
}
