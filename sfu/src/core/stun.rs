//! Just enough STUN (RFC 8489) to route a binding request from an address not seen yet to its
//! peer: the USERNAME attribute's first half, our ICE ufrag (RFC 8445, 7.2.2). Nothing else is
//! trusted here; str0m checks the request's integrity with the peer's password afterwards.

const HEADER: usize = 20;
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
const USERNAME: [u8; 2] = [0x00, 0x06];

/// Our ufrag, from a binding request's `USERNAME` (`ours:theirs`).
pub fn binding_ufrag(data: &[u8]) -> Option<&str> {
    if data.len() < HEADER || data[0..2] != BINDING_REQUEST || data[4..8] != MAGIC_COOKIE {
        return None;
    }
    let length = usize::from(u16::from_be_bytes([data[2], data[3]]));
    let body = data.get(HEADER..HEADER + length)?;
    let mut at = 0;
    while let Some(head) = body.get(at..at + 4) {
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let value = body.get(at + 4..at + 4 + len)?;
        if head[0..2] == USERNAME {
            let name = std::str::from_utf8(value).ok()?;
            return name.split_once(':').map(|(ours, _)| ours);
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::binding_ufrag;

    fn request(attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (t, v) in attrs {
            body.extend(t.to_be_bytes());
            body.extend((v.len() as u16).to_be_bytes());
            body.extend(*v);
            body.resize(body.len().div_ceil(4) * 4, 0);
        }
        let mut m = vec![0x00, 0x01];
        m.extend((body.len() as u16).to_be_bytes());
        m.extend([0x21, 0x12, 0xa4, 0x42]);
        m.extend([7u8; 12]);
        m.extend(body);
        m
    }

    #[test]
    fn the_ufrag_is_the_first_half_of_username_wherever_it_stands() {
        let m = request(&[(0x0024, &[0, 0, 0, 1]), (0x0006, b"abcd1234:remote")]);
        assert_eq!(binding_ufrag(&m), Some("abcd1234"));
        let m = request(&[(0x0006, b"x:y"), (0x8028, &[1, 2, 3, 4])]);
        assert_eq!(binding_ufrag(&m), Some("x"));
    }

    #[test]
    fn anything_else_has_none() {
        // No USERNAME; a USERNAME without the colon; not a binding request (a response).
        assert_eq!(binding_ufrag(&request(&[(0x0024, &[0, 0, 0, 1])])), None);
        assert_eq!(binding_ufrag(&request(&[(0x0006, b"abcd")])), None);
        let mut response = request(&[(0x0006, b"a:b")]);
        response[0..2].copy_from_slice(&[0x01, 0x01]);
        assert_eq!(binding_ufrag(&response), None);
        // RTP, DTLS, and every cut of a good request, including lengths that lie.
        assert_eq!(binding_ufrag(&[0x80; 40]), None);
        assert_eq!(binding_ufrag(&[0x16, 0xfe, 0xfd, 0, 0]), None);
        let good = request(&[(0x0006, b"abcd1234:remote")]);
        for n in 0..good.len() {
            assert_eq!(binding_ufrag(&good[..n]), None, "{n} bytes");
        }
        let mut lying = good.clone();
        lying[22..24].copy_from_slice(&400u16.to_be_bytes());
        assert_eq!(binding_ufrag(&lying), None);
    }
}
