//! Simulcast: one subscriber leg forwarding one of a publisher's layers at a
//! time, as one continuous RTP stream.
//!
//! A simulcast publisher sends the same camera as 2-3 RTP streams (layers)
//! at different resolutions, each with its own SSRC, sequence numbers, RTP
//! timestamp base and VP8 picture ids. A subscriber gets exactly one layer
//! at a time, chosen for its bandwidth or viewport, and must see a single
//! stream: the leg switches only at a key frame of the new layer
//! ([`keyframe`]) and renumbers what it forwards so that sequence numbers,
//! timestamps and VP8 picture ids / TL0PICIDX run on across switches
//! ([`switcher`], [`vp8`]).
//!
//! Everything here is pure: no sockets, no clocks (arrival times come in as
//! arguments), no allocation per packet, and no panics on any payload, since
//! payloads come from the network.

mod keyframe;
mod size;
mod switcher;
mod vp8;

pub(crate) use keyframe::{is_keyframe_start, VideoCodec};
pub(crate) use size::frame_size;
#[cfg(test)]
pub(crate) use switcher::Munged;
pub(crate) use switcher::{layer_bit, LayerSwitcher};
pub(crate) use vp8::Vp8Descriptor;

#[cfg(test)]
mod tests;
