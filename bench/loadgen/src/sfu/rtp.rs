//! What the generator reads of the SRTP datagrams it sends and receives, without decrypting
//! them: SRTP (RFC 3711) encrypts only the payload, so the RTP header (RFC 3550 §5.1) is in
//! the clear; and the SSRC each m-line of the SFU's offers will send with, from the SDP.

use std::collections::HashMap;

/// The clear fields of an RTP packet's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub seq: u16,
    pub time: u32,
    pub ssrc: u32,
}

/// The header of `d` if it is an RTP packet (version 2, not RTCP), else `None`. RTP and RTCP
/// share the port (RFC 5761 §4): payload types 64-95 with the marker bit are RTCP's packet
/// types 192-223, which RTP never uses for media.
pub fn header(d: &[u8]) -> Option<Header> {
    if d.len() < 12 || d[0] >> 6 != 2 || (192..=223).contains(&d[1]) {
        return None;
    }
    Some(Header {
        seq: u16::from_be_bytes([d[2], d[3]]),
        time: u32::from_be_bytes([d[4], d[5], d[6], d[7]]),
        ssrc: u32::from_be_bytes([d[8], d[9], d[10], d[11]]),
    })
}

/// The media SSRC of each m-line (by mid) that declares one in `sdp`: the first `a=ssrc` of
/// the section that is not the repair stream of an `a=ssrc-group:FID` (RFC 5576 §4.2).
pub fn ssrcs_by_mid(sdp: &str) -> HashMap<String, u32> {
    let mut out = HashMap::new();
    for section in sdp.split("\nm=").skip(1) {
        let mut mid = None;
        let mut repair = Vec::new();
        let mut ssrcs = Vec::new();
        for line in section.lines().map(str::trim_end) {
            if let Some(m) = line.strip_prefix("a=mid:") {
                mid = Some(m.to_string());
            } else if let Some(g) = line.strip_prefix("a=ssrc-group:FID ") {
                repair.extend(
                    g.split_whitespace()
                        .skip(1)
                        .filter_map(|s| s.parse::<u32>().ok()),
                );
            } else if let Some(s) = line.strip_prefix("a=ssrc:") {
                if let Some(Ok(ssrc)) = s.split_whitespace().next().map(str::parse::<u32>) {
                    if !ssrcs.contains(&ssrc) {
                        ssrcs.push(ssrc);
                    }
                }
            }
        }
        let media = ssrcs.into_iter().find(|s| !repair.contains(s));
        if let (Some(mid), Some(ssrc)) = (mid, media) {
            out.insert(mid, ssrc);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rtp_headers_and_not_rtcp() {
        let mut p = vec![
            0x90, 0x60, 0x12, 0x34, 0, 0, 0x03, 0xc0, 0xde, 0xad, 0xbe, 0xef,
        ];
        p.extend([0u8; 20]);
        assert_eq!(
            header(&p),
            Some(Header {
                seq: 0x1234,
                time: 960,
                ssrc: 0xdead_beef
            })
        );
        // A receiver report, a STUN message, a DTLS record, a short packet.
        let rr = [0x81, 201, 0, 7, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(header(&rr), None);
        assert_eq!(
            header(&[0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0]),
            None
        );
        assert_eq!(
            header(&[0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            None
        );
        assert_eq!(header(&p[..11]), None);
    }

    #[test]
    fn finds_each_m_lines_media_ssrc() {
        let sdp = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n\
            a=ssrc:11 cname:x\r\na=ssrc:11 msid:a b\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:1\r\n\
            a=ssrc-group:FID 22 23\r\na=ssrc:22 cname:x\r\na=ssrc:23 cname:x\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=recvonly\r\n";
        let m = ssrcs_by_mid(sdp);
        assert_eq!(m.get("0"), Some(&11));
        assert_eq!(m.get("1"), Some(&22));
        assert_eq!(m.get("2"), None, "no ssrc declared");
        // The repair stream listed first is still told apart.
        let sdp = "m=video 9 X 96\r\na=mid:v\r\na=ssrc:5 cname:x\r\na=ssrc:4 cname:x\r\n\
            a=ssrc-group:FID 4 5\r\n";
        assert_eq!(ssrcs_by_mid(&format!("v=0\r\n{sdp}")).get("v"), Some(&4));
    }
}
