//! The SRTP keys of a connection, for the forwarding fast path, and the
//! certificates its DTLS handshake checked. Shared by sfud (which protects
//! what it forwards itself) and the load generator's lite receivers (which
//! decrypt what they receive themselves, for the same reason).
//!
//! `rtc` 0.21 keeps each connection's SRTP contexts to itself, and every
//! packet written through it crosses the whole interceptor chain: about two
//! thirds of the cost of a forwarded packet (bench/analysis.md). The
//! fast path protects forwarded RTP itself, with an SRTP context of its own
//! keyed like `rtc`'s outgoing one. The keys come through the one public
//! door `rtc` has for them, the crypto provider: when the DTLS handshake
//! completes, `rtc` builds its outgoing context and then its incoming one
//! (`update_srtp_contexts`), and each derives its session keys (RFC 3711
//! section 4.3) by encrypting blocks with the master key, the first block
//! being the master salt itself (label 0, index 0). [`KeyTap`] wraps the
//! real provider, passes every call through unchanged and remembers the
//! master key, the first block and the cipher the context then asks for.
//!
//! The same tap, on every connection, sees the certificates `rtc` hashes:
//! its own, to describe it, and the peer's, to check it against the
//! description's fingerprint. `rtc` 0.21 fails a handshake whose check
//! fails without saying so through its API, so the engine asks the tap
//! ([`KeyTap::foreign_certificate`]).
//!
//! This reads an internal order of `rtc` (outgoing context first, session
//! key first): `rtc` is pinned to one version, the unit tests below check
//! the derivation against the real SRTP crate, and the integration tests
//! check that Chromium and the Rust client decrypt what the fast path sends.

use std::sync::{Arc, Mutex, PoisonError};

use rtc::crypto::{
    AeadAlgorithm, AeadCipher, BlockCipherAlgorithm, CbcAlgorithm, CbcCipher, CryptoAlgorithm,
    CryptoError, HashAlgorithm, HmacAlgorithm, KeyExchangeAlgorithm, Mac, PublicKey, RTCCrypto,
    RTCCryptoProvider, RTCRandom, SignatureScheme, SigningKey, StreamCipher, StreamCipherAlgorithm,
};
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;

/// One SRTP context's master key as seen through the provider.
#[derive(Clone)]
struct Derivation {
    master_key: Vec<u8>,
    /// The first block encrypted with it: the master salt, zero-padded.
    first_block: Vec<u8>,
    /// What the context keyed with its session key.
    cipher: Option<SessionCipher>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SessionCipher {
    Aead(AeadAlgorithm),
    Stream(StreamCipherAlgorithm),
}

/// A crypto provider that passes everything to the real one and remembers
/// the SRTP master keys derived through it; see the module docs.
pub struct KeyTap {
    inner: Arc<dyn RTCCryptoProvider>,
    crypto: TapCrypto,
}

struct TapCrypto {
    inner: Arc<dyn RTCCryptoProvider>,
    seen: Mutex<Vec<Derivation>>,
    /// SHA-256 digests of the certificates hashed through the provider:
    /// `rtc` hashes its own to describe it and the peer's to check it
    /// against the description's fingerprint.
    certificates: Mutex<Vec<Vec<u8>>>,
}

impl KeyTap {
    /// Wraps the default provider.
    pub fn new() -> Result<Arc<KeyTap>, CryptoError> {
        Ok(Self::wrapping(rtc::crypto::default_provider()?))
    }

    fn wrapping(inner: Arc<dyn RTCCryptoProvider>) -> Arc<KeyTap> {
        Arc::new(KeyTap {
            inner: inner.clone(),
            crypto: TapCrypto {
                inner,
                seen: Mutex::new(Vec::new()),
                certificates: Mutex::new(Vec::new()),
            },
        })
    }

    /// An SRTP context keyed like the connection's outgoing one, once its
    /// DTLS handshake has completed; `None` before, or if what was observed
    /// is not two complete derivations of a known profile.
    pub fn outgoing_context(&self) -> Option<Context> {
        self.context(Direction::Outgoing)
    }

    /// An SRTP context keyed like the connection's incoming one (the
    /// remote's keys): the fast path reads the subscriber's transport-wide
    /// feedback with it. As for [`KeyTap::outgoing_context`].
    pub fn incoming_context(&self) -> Option<Context> {
        self.context(Direction::Incoming)
    }

    /// Whether a certificate was hashed whose SHA-256 digest is none of
    /// `fingerprints` (the local and the remote description's). `rtc` 0.21
    /// then fails the DTLS handshake on the peer's certificate, but says so
    /// only in its log (see docs/security.md); this is how the engine
    /// learns it.
    pub fn foreign_certificate(&self, fingerprints: &[Vec<u8>]) -> bool {
        self.crypto
            .certificates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|digest| !fingerprints.contains(digest))
    }

    fn context(&self, direction: Direction) -> Option<Context> {
        let seen = self
            .crypto
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Outgoing, then incoming: both must be there, or the handshake is
        // not finished (or something unexpected derived keys).
        let [local, remote] = seen.as_slice() else {
            return None;
        };
        let keys = match direction {
            Direction::Outgoing => local,
            Direction::Incoming => remote,
        };
        let profile = match keys.cipher? {
            SessionCipher::Aead(AeadAlgorithm::Aes128Gcm) => ProtectionProfile::AeadAes128Gcm,
            SessionCipher::Aead(AeadAlgorithm::Aes256Gcm) => ProtectionProfile::AeadAes256Gcm,
            // The 32-bit-tag profiles must not be offered (sfud's `media::peer`
            // leaves them out, as does the load generator), so a
            // counter-mode context is the 80-bit one.
            SessionCipher::Stream(StreamCipherAlgorithm::Aes128Ctr) => {
                ProtectionProfile::Aes128CmHmacSha1_80
            }
            SessionCipher::Stream(StreamCipherAlgorithm::Aes256Ctr) => {
                ProtectionProfile::Aes256CmHmacSha1_80
            }
            _ => return None,
        };
        if keys.master_key.len() != profile.key_len() {
            return None;
        }
        let salt = keys.first_block.get(..profile.salt_len())?;
        Context::new(
            &keys.master_key,
            salt,
            profile,
            None,
            None,
            self.crypto.inner.crypto(),
        )
        .ok()
    }
}

#[derive(Clone, Copy)]
enum Direction {
    Outgoing,
    Incoming,
}

impl RTCCryptoProvider for KeyTap {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn crypto(&self) -> &dyn RTCCrypto {
        &self.crypto
    }

    fn random(&self) -> &dyn RTCRandom {
        self.inner.random()
    }
}

impl TapCrypto {
    fn note_block(&self, key: &[u8], block: &[u8]) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        // Each context encrypts four or more blocks with its master key; the
        // first one carries the salt.
        if seen.last().is_some_and(|d| d.master_key == key) {
            return;
        }
        // Bounded: a connection derives two contexts; anything past a few is
        // not SRTP keying and is not kept.
        if seen.len() < 4 {
            seen.push(Derivation {
                master_key: key.to_vec(),
                first_block: block.to_vec(),
                cipher: None,
            });
        }
    }

    /// Keeps the digest of `data` if it is a DER certificate (a SEQUENCE
    /// with a two-byte length that spans it exactly): handshake transcripts
    /// hashed through the same call never start that way.
    fn note_certificate(&self, algorithm: HashAlgorithm, data: &[u8], digest: &[u8]) {
        let [0x30, 0x82, hi, lo, ..] = data else {
            return;
        };
        if algorithm != HashAlgorithm::Sha256
            || usize::from(u16::from_be_bytes([*hi, *lo])) + 4 != data.len()
        {
            return;
        }
        let mut certificates = self
            .certificates
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Bounded: a connection has two certificates.
        if certificates.len() < 4 && !certificates.iter().any(|c| c == digest) {
            certificates.push(digest.to_vec());
        }
    }

    fn note_cipher(&self, cipher: SessionCipher) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(last) = seen.last_mut() {
            last.cipher.get_or_insert(cipher);
        }
    }
}

impl RTCCrypto for TapCrypto {
    fn supports(&self, algorithm: CryptoAlgorithm) -> bool {
        self.inner.crypto().supports(algorithm)
    }

    fn hash(&self, algorithm: HashAlgorithm, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let digest = self.inner.crypto().hash(algorithm, data)?;
        self.note_certificate(algorithm, data, &digest);
        Ok(digest)
    }

    fn block_encrypt(
        &self,
        algorithm: BlockCipherAlgorithm,
        key: &[u8],
        block: &mut [u8],
    ) -> Result<(), CryptoError> {
        // Only the SRTP key derivation encrypts single blocks.
        self.note_block(key, block);
        self.inner.crypto().block_encrypt(algorithm, key, block)
    }

    fn new_hmac(&self, algorithm: HmacAlgorithm, key: &[u8]) -> Result<Box<dyn Mac>, CryptoError> {
        self.inner.crypto().new_hmac(algorithm, key)
    }

    fn new_stream_cipher(
        &self,
        algorithm: StreamCipherAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn StreamCipher>, CryptoError> {
        self.note_cipher(SessionCipher::Stream(algorithm));
        self.inner.crypto().new_stream_cipher(algorithm, key)
    }

    fn new_aead(
        &self,
        algorithm: AeadAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn AeadCipher>, CryptoError> {
        self.note_cipher(SessionCipher::Aead(algorithm));
        self.inner.crypto().new_aead(algorithm, key)
    }

    fn new_cbc(
        &self,
        algorithm: CbcAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn CbcCipher>, CryptoError> {
        self.inner.crypto().new_cbc(algorithm, key)
    }

    fn start_key_exchange(
        &self,
        algorithm: KeyExchangeAlgorithm,
    ) -> Result<Box<dyn rtc::crypto::ActiveKeyExchange>, CryptoError> {
        self.inner.crypto().start_key_exchange(algorithm)
    }

    fn generate_signing_key(
        &self,
        scheme: SignatureScheme,
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.inner.crypto().generate_signing_key(scheme)
    }

    fn import_signing_key(
        &self,
        scheme: SignatureScheme,
        pkcs8_der: &[u8],
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.inner.crypto().import_signing_key(scheme, pkcs8_der)
    }

    fn verify_signature(
        &self,
        scheme: SignatureScheme,
        public_key: PublicKey<'_>,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        self.inner
            .crypto()
            .verify_signature(scheme, public_key, message, signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtp;
    use rtc::shared::marshal::Marshal;

    fn packet(ssrc: u32, seq: u16) -> (Vec<u8>, rtp::header::Header) {
        let p = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                payload_type: 96,
                sequence_number: seq,
                timestamp: 90_000,
                ssrc,
                ..Default::default()
            },
            payload: bytes::Bytes::from(vec![7u8; 1100]),
        };
        (p.marshal().expect("marshal").to_vec(), p.header)
    }

    /// What `rtc` does at the end of a handshake: an outgoing context, then
    /// an incoming one, both through the connection's provider.
    fn handshake(tap: &KeyTap, profile: ProtectionProfile) -> Context {
        let key = |b: u8| vec![b; profile.key_len()];
        let salt = |b: u8| vec![b; profile.salt_len()];
        let outgoing = Context::new(&key(1), &salt(2), profile, None, None, tap.crypto())
            .expect("outgoing context");
        Context::new(&key(3), &salt(4), profile, None, None, tap.crypto())
            .expect("incoming context");
        outgoing
    }

    #[test]
    fn observed_keys_protect_exactly_like_the_connection() {
        for profile in [
            ProtectionProfile::AeadAes128Gcm,
            ProtectionProfile::AeadAes256Gcm,
            ProtectionProfile::Aes128CmHmacSha1_80,
        ] {
            let tap = KeyTap::new().expect("provider");
            assert!(tap.outgoing_context().is_none(), "nothing derived yet");
            let mut theirs = handshake(&tap, profile);
            let mut ours = tap.outgoing_context().expect("keys observed");
            // Across a sequence-number wrap, so the rollover counters agree too.
            for seq in [65534u16, 65535, 0, 1] {
                let (raw, header) = packet(0xdead_beef, seq);
                let a = theirs.encrypt_rtp(&raw).expect("rtc's context");
                let b = ours.encrypt_rtp_with_header(&raw, &header).expect("ours");
                assert_eq!(a, b, "{profile:?} seq {seq}");
            }
        }
    }

    #[test]
    fn a_packet_protected_again_after_a_wrap_still_decrypts() {
        // What answering a NACK does: protect an older sequence number again,
        // here from before the wrap, between newer packets.
        let tap = KeyTap::new().expect("provider");
        let profile = ProtectionProfile::AeadAes128Gcm;
        handshake(&tap, profile);
        let mut ours = tap.outgoing_context().expect("keys observed");
        let mut receiver = Context::new(&[1; 16], &[2; 12], profile, None, None, tap.crypto())
            .expect("the subscriber's incoming context");
        for seq in [65534u16, 65535, 0, 1, 65535, 2, 65534, 3] {
            let (raw, header) = packet(7, seq);
            let protected = ours.encrypt_rtp_with_header(&raw, &header).expect("ours");
            let plain = receiver.decrypt_rtp(&protected).expect("decrypts");
            assert_eq!(&plain[..], &raw[..], "seq {seq}");
        }
    }

    #[test]
    fn observed_incoming_keys_read_what_the_peer_protects() {
        for profile in [
            ProtectionProfile::AeadAes128Gcm,
            ProtectionProfile::Aes128CmHmacSha1_80,
        ] {
            let tap = KeyTap::new().expect("provider");
            handshake(&tap, profile);
            let mut ours = tap.incoming_context().expect("keys observed");
            // The peer's outgoing context is keyed like the connection's
            // incoming one (key 3, salt 4 in `handshake`).
            let mut peer = Context::new(
                &vec![3; profile.key_len()],
                &vec![4; profile.salt_len()],
                profile,
                None,
                None,
                tap.crypto(),
            )
            .expect("the peer's context");
            // A receiver report: version 2, no report blocks.
            let rr = [0x80u8, 201, 0, 1, 0, 0, 0, 9];
            let protected = peer.encrypt_rtcp(&rr).expect("peer protects");
            let plain = ours.decrypt_rtcp(&protected).expect("we read it");
            assert_eq!(&plain[..], &rr[..], "{profile:?}");
        }
    }

    #[test]
    fn a_certificate_hashed_that_no_description_names_is_foreign() {
        let tap = KeyTap::new().expect("provider");
        // A DER SEQUENCE with a two-byte length, as certificates are.
        let mut cert = vec![0x30, 0x82, 0x01, 0x00];
        cert.extend(std::iter::repeat_n(7u8, 0x100));
        let digest = tap
            .crypto()
            .hash(HashAlgorithm::Sha256, &cert)
            .expect("hashes");
        assert!(!tap.foreign_certificate(std::slice::from_ref(&digest)));
        assert!(tap.foreign_certificate(&[vec![0; 32]]));
        // What is not a certificate (a handshake transcript) is not kept.
        let other = KeyTap::new().expect("provider");
        other
            .crypto()
            .hash(HashAlgorithm::Sha256, &[1, 0, 0, 4, 1, 2, 3, 4])
            .expect("hashes");
        assert!(!other.foreign_certificate(&[]));
    }

    #[test]
    fn one_context_is_not_enough() {
        let tap = KeyTap::new().expect("provider");
        let profile = ProtectionProfile::AeadAes128Gcm;
        Context::new(&[1; 16], &[2; 12], profile, None, None, tap.crypto()).expect("context");
        assert!(tap.outgoing_context().is_none());
    }
}
