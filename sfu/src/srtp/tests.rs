//! Known answers from RFC 3711 for the key derivation and the counter blocks, and round trips
//! through every profile. That these transforms are str0m's own, byte for byte, is shown with
//! real connections in `tests/room.rs` (`our_srtp_reads_and_writes_what_str0m_sends`).

use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn crypto() -> CryptoProvider {
    str0m::crypto::from_feature_flags()
}

/// RFC 3711 Appendix B.3: the session keys from a master key and salt.
#[test]
fn the_key_derivation_gives_rfc_3711s_session_keys() {
    let srtp = crypto().srtp_provider;
    let key = hex("E1F97A0D3E018BE0D64FA32C06DE4139");
    let salt = hex("0EC675AD498AFEEBB6960B3AABE6");
    let mut cipher_key = [0u8; 16];
    derive(srtp, &key, &salt, LABELS_RTP.key, &mut cipher_key);
    assert_eq!(cipher_key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
    let mut cipher_salt = [0u8; 14];
    derive(srtp, &key, &salt, LABELS_RTP.salt, &mut cipher_salt);
    assert_eq!(cipher_salt.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
    let mut auth = [0u8; CM_AUTH_KEY];
    derive(srtp, &key, &salt, LABELS_RTP.auth, &mut auth);
    assert_eq!(
        auth.to_vec(),
        hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
    );
}

/// RFC 3711 Appendix B.2: the counter block for SSRC 0, index 0, and the keystream from it.
#[test]
fn the_counter_block_and_keystream_are_rfc_3711s() {
    let salt: [u8; 14] = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD").try_into().unwrap();
    let iv = cm_iv(&salt, 0, 0);
    assert_eq!(iv.to_vec(), hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"));
    let key: [u8; 16] = hex("2B7E151628AED2A6ABF7158809CF4F3C").try_into().unwrap();
    let mut cipher = crypto()
        .srtp_provider
        .aes_128_cm_sha1_80()
        .create_cipher(key, true);
    let mut stream = [0u8; 48];
    cipher.encrypt(&iv, &[0u8; 48], &mut stream).unwrap();
    assert_eq!(
        stream.to_vec(),
        hex(concat!(
            "E03EAD0935C95E80E166B16DD92B4EB4",
            "D23513162B02D0F72A43A2FE4A5F97AB",
            "41E95B3BB0A2E8DD477901E4FCA894C0"
        ))
    );
    // SSRC and index land where RFC 3711 section 4.1.1 puts them.
    let iv = cm_iv(&[0; 14], 0x0102_0304, 0x0a0b_0c0d_0e0f);
    assert_eq!(
        iv.to_vec(),
        hex("0000000001020304 0A0B0C0D0E0F0000"
            .replace(' ', "")
            .as_str())
    );
}

/// Keys for `profile` as DTLS would export them (arbitrary bytes), one end's and the other's.
fn ends(profile: SrtpProfile) -> (Keys, Keys) {
    let (k, s) = lengths(profile);
    let material: Vec<u8> = (0..2 * (k + s)).map(|i| (i * 7 + 3) as u8).collect();
    (
        Keys::new(profile, &material, true).unwrap(),
        Keys::new(profile, &material, false).unwrap(),
    )
}

fn rtp_packet(seq: u16, extension: bool) -> Vec<u8> {
    let mut p = vec![0x80 | (u8::from(extension) << 4), 96];
    p.extend(seq.to_be_bytes());
    p.extend(0x1234_5678u32.to_be_bytes());
    p.extend(0xCAFE_BABEu32.to_be_bytes());
    if extension {
        // One-byte header extensions (RFC 8285), one word: an audio level.
        p.extend([0xBE, 0xDE, 0, 1, 0x10, 0x2A, 0, 0]);
    }
    p.extend((0..300u32).map(|i| i as u8));
    p
}

#[test]
fn what_one_end_protects_the_other_reads_in_every_profile() {
    let c = crypto();
    for profile in SrtpProfile::ALL {
        let (client, server) = ends(*profile);
        let mut send = client.sender(&c);
        let mut recv = server.receiver(&c);
        let (mut sealed, mut clear) = (Vec::new(), Vec::new());
        for (i, ext) in [(0u64, false), (65_535, true), (65_536 + 7, true)] {
            let packet = rtp_packet(i as u16, ext);
            send.protect_rtp(&packet, i, &mut sealed).unwrap();
            assert_eq!(
                sealed.len(),
                packet.len() + send.rtp_overhead(),
                "{profile:?}"
            );
            let header = rtp_header_len(&packet).unwrap();
            assert_eq!(
                sealed[..header],
                packet[..header],
                "{profile:?}: clear header"
            );
            assert_ne!(
                sealed[header..packet.len()],
                packet[header..],
                "{profile:?}"
            );
            recv.unprotect_rtp(&sealed, i, &mut clear).unwrap();
            assert_eq!(clear, packet, "{profile:?}");
            // The wrong rollover counter, a flipped bit: refused.
            let wrong = recv.unprotect_rtp(&sealed, i + 65_536, &mut clear);
            assert_eq!(wrong, Err(SrtpError::Auth), "{profile:?}");
            let mut bent = sealed.clone();
            bent[header + 3] ^= 1;
            assert_eq!(
                recv.unprotect_rtp(&bent, i, &mut clear),
                Err(SrtpError::Auth),
                "{profile:?}"
            );
        }
        // A receiver report, compound with nothing else: 8 clear bytes and a report block.
        let mut rtcp = vec![0x81, 201, 0, 7];
        rtcp.extend(0xCAFE_BABEu32.to_be_bytes());
        rtcp.extend([9u8; 24]);
        for expect in 0..3 {
            send.protect_rtcp(&rtcp, &mut sealed).unwrap();
            assert_eq!(sealed[..8], rtcp[..8]);
            assert_eq!(recv.unprotect_rtcp(&sealed, &mut clear), Ok(expect));
            assert_eq!(clear, rtcp, "{profile:?}");
        }
        // The other direction has its own keys.
        let mut theirs = client.receiver(&c);
        send.protect_rtp(&rtp_packet(5, false), 5, &mut sealed)
            .unwrap();
        assert_eq!(
            theirs.unprotect_rtp(&sealed, 5, &mut clear),
            Err(SrtpError::Auth)
        );
    }
}

#[test]
fn short_or_foreign_input_is_an_error_not_a_panic() {
    let c = crypto();
    let (client, _) = ends(SrtpProfile::AEAD_AES_128_GCM);
    let mut recv = client.receiver(&c);
    let mut out = Vec::new();
    for bad in [&[][..], &[0x80, 96, 0, 1], &[0x40; 40], &[0x90; 14]] {
        assert!(recv.unprotect_rtp(bad, 0, &mut out).is_err(), "{bad:?}");
        assert!(recv.unprotect_rtcp(bad, &mut out).is_err(), "{bad:?}");
    }
    assert!(Keys::new(SrtpProfile::AEAD_AES_128_GCM, &[0; 10], true).is_none());
}
