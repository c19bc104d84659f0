//! Chat: text messages over an SCTP data channel (label [`CHAT_LABEL`],
//! reliable and ordered, as the client opens it) on each participant's
//! publish connection. What a participant sends goes to its room
//! (`MediaEvent::Chat`), which hands it to every other participant's
//! channel (`MediaCommand::Chat`).
//!
//! Bounded both ways: a message longer than [`MAX_CHAT_BYTES`], a binary
//! one, or one over the sender's rate ([`CHAT_PER_SECOND`], bursts of
//! [`CHAT_BURST`]) is dropped and the sender told (`ChatRefused`); a
//! receiver whose channel holds more than [`CHAT_HIGH_WATER`] bytes unsent
//! (a reader that does not keep up) misses messages until it drains, so no
//! buffer grows without bound. Other data channels are closed.

use super::*;
use rtc::data_channel::RTCDataChannelId;
use rtc::data_channel::RTCDataChannelMessage;
use rtc::peer_connection::event::RTCDataChannelEvent;

/// The label of the chat channel.
pub const CHAT_LABEL: &str = "chat";
/// Longest chat message accepted, bytes of UTF-8.
pub const MAX_CHAT_BYTES: usize = 4096;
/// Messages one participant may send per second, on average.
pub const CHAT_PER_SECOND: f64 = 5.0;
/// ... and at once.
pub const CHAT_BURST: f64 = 10.0;
/// Bytes a receiver's channel may hold unsent before it misses messages.
pub const CHAT_HIGH_WATER: u32 = 256 * 1024;

/// Why a chat message was not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatRefusal {
    /// Longer than [`MAX_CHAT_BYTES`].
    TooLarge,
    /// Over the sender's rate.
    RateLimited,
    /// Binary, or not UTF-8.
    NotText,
}

/// A publish connection's chat channel.
#[derive(Debug)]
pub(super) struct Chat {
    channel: RTCDataChannelId,
    tokens: f64,
    at: Instant,
    /// Its unsent bytes are over [`CHAT_HIGH_WATER`].
    congested: bool,
}

impl Chat {
    fn new(channel: RTCDataChannelId, now: Instant) -> Self {
        Chat {
            channel,
            tokens: CHAT_BURST,
            at: now,
            congested: false,
        }
    }

    /// Whether one more message fits the sender's rate.
    fn admit(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * CHAT_PER_SECOND).min(CHAT_BURST);
        self.at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// Whether a message is relayed, and if not why.
fn check(
    chat: &mut Chat,
    msg: &RTCDataChannelMessage,
    now: Instant,
) -> Result<String, ChatRefusal> {
    if !msg.is_string {
        return Err(ChatRefusal::NotText);
    }
    if msg.data.len() > MAX_CHAT_BYTES {
        return Err(ChatRefusal::TooLarge);
    }
    if !chat.admit(now) {
        return Err(ChatRefusal::RateLimited);
    }
    String::from_utf8(msg.data.to_vec()).map_err(|_| ChatRefusal::NotText)
}

impl MediaCore {
    /// A data channel event on connection `id`.
    pub(super) fn on_data_channel(&mut self, id: ConnId, ev: RTCDataChannelEvent, now: Instant) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        match ev {
            RTCDataChannelEvent::OnOpen(channel) => {
                let Some(mut dc) = conn.pc.data_channel(channel) else {
                    return;
                };
                if conn.kind != PcKind::Publish || dc.label() != CHAT_LABEL || conn.chat.is_some() {
                    debug!(peer = %conn.peer, label = dc.label(), "data channel refused");
                    let _ = dc.close();
                } else {
                    dc.set_buffered_amount_high_threshold(CHAT_HIGH_WATER);
                    dc.set_buffered_amount_low_threshold(CHAT_HIGH_WATER / 4);
                    conn.chat = Some(Chat::new(channel, now));
                    debug!(peer = %conn.peer, "chat channel open");
                }
            }
            RTCDataChannelEvent::OnBufferedAmountHigh(channel) => {
                if let Some(chat) = conn.chat.as_mut().filter(|c| c.channel == channel) {
                    chat.congested = true;
                }
            }
            RTCDataChannelEvent::OnBufferedAmountLow(channel) => {
                if let Some(chat) = conn.chat.as_mut().filter(|c| c.channel == channel) {
                    chat.congested = false;
                }
            }
            RTCDataChannelEvent::OnClose(channel)
                if conn.chat.as_ref().is_some_and(|c| c.channel == channel) =>
            {
                conn.chat = None;
            }
            _ => {}
        }
    }

    /// A message on one of connection `id`'s data channels.
    pub(super) fn on_data_message(
        &mut self,
        id: ConnId,
        channel: RTCDataChannelId,
        msg: RTCDataChannelMessage,
        now: Instant,
    ) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let peer = conn.peer;
        let Some(chat) = conn.chat.as_mut().filter(|c| c.channel == channel) else {
            return;
        };
        let event = match check(chat, &msg, now) {
            Ok(text) => {
                self.stats.chat_messages += 1;
                MediaEvent::Chat { peer, text }
            }
            Err(why) => {
                self.stats.chat_refused += 1;
                MediaEvent::ChatRefused { peer, why }
            }
        };
        self.emit(peer, event);
    }

    /// Sends `text` on `peer`'s chat channel, unless it has none (yet) or
    /// is congested.
    pub(super) fn send_chat(&mut self, peer: PeerId, text: String, now: Instant) {
        let Some(id) = self.conn_of(peer, PcKind::Publish) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(chat) = conn.chat.as_ref() else {
            return;
        };
        if chat.congested {
            self.stats.chat_dropped += 1;
            return;
        }
        let channel = chat.channel;
        let sent = conn
            .pc
            .data_channel(channel)
            .map(|mut dc| dc.send_text(now, text));
        if !matches!(sent, Some(Ok(()))) {
            self.stats.chat_dropped += 1;
        }
        self.drive(id, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> RTCDataChannelMessage {
        RTCDataChannelMessage {
            is_string: true,
            data: bytes::BytesMut::from(s),
        }
    }

    #[test]
    fn messages_are_checked_for_kind_size_and_rate() {
        let t0 = Instant::now();
        let mut chat = Chat::new(RTCDataChannelId::default(), t0);
        assert_eq!(check(&mut chat, &text("hello"), t0), Ok("hello".to_owned()));
        let binary = RTCDataChannelMessage {
            is_string: false,
            data: bytes::BytesMut::from(&b"\x00\x01"[..]),
        };
        assert_eq!(check(&mut chat, &binary, t0), Err(ChatRefusal::NotText));
        let long = "x".repeat(MAX_CHAT_BYTES + 1);
        assert_eq!(
            check(&mut chat, &text(&long), t0),
            Err(ChatRefusal::TooLarge)
        );
        assert!(
            check(&mut chat, &text(&long[1..]), t0).is_ok(),
            "at the limit"
        );
        // A burst, then the rate.
        let sent = (0..20)
            .filter(|_| check(&mut chat, &text("x"), t0).is_ok())
            .count();
        assert_eq!(sent, CHAT_BURST as usize - 2);
        assert_eq!(
            check(&mut chat, &text("x"), t0),
            Err(ChatRefusal::RateLimited)
        );
        let later = t0 + Duration::from_secs_f64(1.0 / CHAT_PER_SECOND);
        assert!(check(&mut chat, &text("x"), later).is_ok());
    }
}
