//! The receive fast path: once DTLS has keyed the connection, the receiver
//! decrypts RTP with an SRTP context of its own (keyed like `rtc`'s
//! incoming one, learnt through [`KeyTap`]) instead of handing every packet
//! to `rtc`, whose read pipeline (SRTP, the interceptor chain, statistics,
//! messages moved between stages) was most of the generator's CPU. It does
//! what that pipeline did for a receiver that matters to the SFU: it notes
//! each packet's transport-wide number and arrival, and sends the feedback
//! ([`Feedback`]) every [`FEEDBACK_EVERY`], as browsers do. STUN, DTLS and
//! RTCP still go through `rtc`.
//!
//! Left out, as no loopback run needs them: NACKs (nothing is lost before
//! a ramp's step fails) and receiver reports after the switch.

use std::time::{Duration, Instant};

use rtc::rtp;
use rtc::shared::marshal::{Marshal, Unmarshal};
use rtc::srtp::context::Context;
use sfu_keytap::KeyTap;

use super::feedback::Feedback;

/// How often feedback is sent (Chromium: every 50-100 ms).
pub(crate) const FEEDBACK_EVERY: Duration = Duration::from_millis(100);

/// One connection's fast path.
pub(crate) struct FastPath {
    srtp_in: Context,
    srtcp_out: Context,
    /// The transport-wide sequence number extension's id, if negotiated.
    twcc_id: Option<u8>,
    feedback: Feedback,
    next_feedback: Instant,
    epoch: Instant,
}

impl FastPath {
    /// The fast path of a connection whose handshake completed, if its keys
    /// were learnt; feedback sent from `sender_ssrc`.
    pub(crate) fn new(
        keys: &KeyTap,
        twcc_id: Option<u8>,
        sender_ssrc: u32,
        now: Instant,
    ) -> Option<FastPath> {
        Some(FastPath {
            srtp_in: keys.incoming_context()?,
            srtcp_out: keys.outgoing_context()?,
            twcc_id,
            feedback: Feedback::new(sender_ssrc),
            next_feedback: now + FEEDBACK_EVERY,
            epoch: now,
        })
    }

    /// Whether `datagram` is SRTP, not SRTCP (RFC 7983, RFC 5761).
    pub(crate) fn is_rtp(datagram: &[u8]) -> bool {
        match datagram {
            [first, second, ..] => (128..=191).contains(first) && !(192..=223).contains(second),
            _ => false,
        }
    }

    /// Decrypts one SRTP datagram received at `at` and notes its
    /// transport-wide number; `None` if it does not decrypt.
    pub(crate) fn read(&mut self, datagram: &[u8], at: Instant) -> Option<rtp::Packet> {
        let mut plain = self.srtp_in.decrypt_rtp(datagram).ok()?;
        let packet = rtp::Packet::unmarshal(&mut plain).ok()?;
        if let Some(seq) = self
            .twcc_id
            .and_then(|id| packet.header.get_extension(id))
            .and_then(|ext| Some(u16::from_be_bytes([*ext.first()?, *ext.get(1)?])))
        {
            let at_us = at.saturating_duration_since(self.epoch).as_micros() as i64;
            self.feedback.record(packet.header.ssrc, seq, at_us);
        }
        Some(packet)
    }

    /// When the next feedback is due.
    pub(crate) fn next_feedback(&self) -> Instant {
        self.next_feedback
    }

    /// The feedback datagram (SRTCP) if one is due at `now` and anything
    /// arrived since the last.
    pub(crate) fn feedback(&mut self, now: Instant) -> Option<Vec<u8>> {
        if now < self.next_feedback {
            return None;
        }
        self.next_feedback = now + FEEDBACK_EVERY;
        if self.feedback.pending() == 0 {
            return None;
        }
        let fb = self.feedback.build()?;
        let plain = fb.marshal().ok()?;
        self.srtcp_out
            .encrypt_rtcp(&plain)
            .ok()
            .map(|protected| protected.to_vec())
    }
}
