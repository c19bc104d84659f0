//! Lets the RTCP the forwarding loop acts on reach it.
//!
//! The `rtc` interceptor chain consumes inbound RTCP unless something marks it
//! for the application. The SFU needs two kinds: a subscriber's PLI or FIR
//! about a forwarded stream, which it relays (rate-limited) to the publisher,
//! a publisher's sender reports, which recordings use to keep audio and
//! video in sync and subscribers get translated, and a subscriber's NACKs,
//! which the fast path answers from the publisher track's history, and a
//! subscriber's REMB or TWCC feedback, what its downlink carries, which
//! chooses its simulcast layers.
//! Receiver reports stay with the interceptors.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::sender_report::SenderReport;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// Marks inbound RTCP that carries a keyframe request, a sender report or a
/// NACK for delivery to the application.
#[derive(Default)]
pub(crate) struct DeliverFeedback {
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

/// Keyframe requests, NACKs and bandwidth estimates (REMB) from subscribers
/// and sender reports from publishers are what the application acts on.
fn wanted_by_application(packets: &[Box<dyn rtc::rtcp::Packet>]) -> bool {
    packets.iter().any(|p| {
        let any = p.as_any();
        any.is::<PictureLossIndication>()
            || any.is::<FullIntraRequest>()
            || any.is::<SenderReport>()
            || any.is::<TransportLayerNack>()
            || any.is::<ReceiverEstimatedMaximumBitrate>()
            || any.is::<TransportLayerCc>()
    })
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for DeliverFeedback {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            if wanted_by_application(packets) {
                msg.message.add(Attribute::DeliverToApplication);
            }
        }
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Self::Error> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        None
    }
}

impl Interceptor for DeliverFeedback {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
