//! The call as people expect it, on the room's side: mute (`mute`), who is
//! speaking (`tell_speakers`, from `rooms::speaking`), and chat
//! (`relay_chat`, from `crate::media::chat`).

use sfu_proto::signaling::{ErrorCode, RoomMode, ServerMessage, TrackKind};
use tracing::info;

use super::RoomActor;
use crate::media::chat::{ChatRefusal, CHAT_PER_SECOND, MAX_CHAT_BYTES};
use crate::media::PeerId;
use crate::rooms::Refusal;

pub(super) fn speakers_message(view: &crate::speech::SpeakersView) -> ServerMessage {
    ServerMessage::Speakers {
        speaking: view.speaking.iter().map(PeerId::to_string).collect(),
        dominant: view.dominant.map(|p| p.to_string()),
    }
}

impl RoomActor {
    /// Mutes or unmutes a speaker's track of `kind`: media stops (or goes
    /// on) forwarding it, and everyone is told.
    pub(super) async fn mute(
        &mut self,
        peer: &str,
        kind: TrackKind,
        muted: bool,
        by_operator: bool,
    ) -> Result<(), Refusal> {
        let id = self.member_id(peer)?;
        let changed = self.room.set_muted(id, kind, muted).ok_or_else(|| {
            Refusal::new(
                ErrorCode::NotAllowed,
                "a listener publishes nothing to mute",
            )
        })?;
        if !changed {
            return Ok(());
        }
        info!(room = %self.room.name, %peer, kind = kind.as_str(), muted, by_operator, "muted");
        if self.room.mode == RoomMode::Sfu {
            self.media.mute(id, kind, muted).await;
        }
        let msg = ServerMessage::TrackMuted {
            peer_id: peer.to_owned(),
            kind,
            muted,
            by_operator,
            detected: false,
        };
        self.broadcast(msg);
        self.drop_slow().await;
        Ok(())
    }

    /// Media found a speaker's `kind` track idle (nothing or only digital
    /// silence sent, without a `mute`), or sending again: everyone is told,
    /// as a mute the server detected.
    pub(super) async fn track_idle(&mut self, peer: PeerId, kind: TrackKind, idle: bool) {
        if self.room.set_silent(peer, kind, idle) != Some(true) {
            return;
        }
        info!(room = %self.room.name, %peer, kind = kind.as_str(), idle, "track idle");
        let msg = ServerMessage::TrackMuted {
            peer_id: peer.to_string(),
            kind,
            muted: idle,
            by_operator: false,
            detected: true,
        };
        self.broadcast(msg);
        self.drop_slow().await;
    }

    /// Hands `peer`'s chat message to everyone else in the room, as
    /// `{"from":ID,"name":NAME,"text":TEXT}` on their chat channels.
    pub(super) async fn relay_chat(&mut self, peer: PeerId, text: String) {
        let Some(name) = self.room.member(peer).map(|m| m.name.clone()) else {
            return;
        };
        let payload = serde_json::json!({
            "from": peer.to_string(),
            "name": name,
            "text": text,
        })
        .to_string();
        let others: Vec<PeerId> = self
            .room
            .members()
            .map(|m| m.id)
            .filter(|m| *m != peer)
            .collect();
        for to in others {
            self.media.send_chat(to, payload.clone()).await;
        }
    }

    /// Tells everyone who is speaking, when that changed.
    pub(super) async fn tell_speakers(&mut self, view: Option<crate::speech::SpeakersView>) {
        let Some(view) = view else {
            return;
        };
        // The dominant speaker's video comes first in every allocation.
        if view.dominant != self.dominant {
            if let Some(old) = self.dominant.take() {
                self.media.set_priority(old, false).await;
            }
            if let Some(new) = view.dominant {
                self.media.set_priority(new, true).await;
            }
            self.dominant = view.dominant;
        }
        let msg = speakers_message(&view);
        self.broadcast(msg);
    }

    /// Tells a participant why its chat message was dropped.
    pub(super) fn chat_refused(&mut self, peer: PeerId, why: ChatRefusal) {
        let (code, message) = match why {
            ChatRefusal::TooLarge => (
                ErrorCode::TooLarge,
                format!("a chat message is at most {MAX_CHAT_BYTES} bytes"),
            ),
            ChatRefusal::RateLimited => (
                ErrorCode::RateLimited,
                format!("too many chat messages: at most {CHAT_PER_SECOND} a second"),
            ),
            ChatRefusal::NotText => (
                ErrorCode::BadRequest,
                "chat messages are UTF-8 text".to_owned(),
            ),
        };
        self.send(peer, ServerMessage::Error { code, message });
    }
}
