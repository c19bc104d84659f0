//! Bounds on the shape of an SDP from a client, checked before `rtc` reads
//! it.
//!
//! `rtc` 0.21.1 finds each payload type's codec by parsing every attribute
//! of its m-section again, so applying a description costs the number of
//! payload types times the number of attribute lines, per m-section. A 64 KiB
//! offer listing a thousand payload types took seconds of the media loop's
//! time, during which no call's media moved. A description that fits these
//! bounds is applied in tens of milliseconds at worst; what browsers send is
//! far inside them (a Chromium publish offer: 2 m-sections, 23 payload types
//! and 153 attribute lines at most).

use super::MediaError;

/// Most payload types one m-section may list (Chromium's video lists 23).
pub(crate) const MAX_FORMATS: usize = 64;
/// Most attribute lines one m-section may have (Chromium's video: about 120).
pub(crate) const MAX_SECTION_ATTRIBUTES: usize = 256;
/// Most m-sections a publisher's offer may have (a camera, a microphone and
/// a screen need 3).
pub(crate) const MAX_OFFER_SECTIONS: usize = 16;
/// Most attribute lines a publisher's offer may have in all.
pub(crate) const MAX_OFFER_ATTRIBUTES: usize = 1024;

/// What the description is: the bounds on a publisher's offer are tighter
/// than on an answer to the server's subscribe offer, which has an m-section
/// per track the subscriber receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Described {
    Offer,
    Answer,
}

/// Checks `sdp` against the bounds; the error names the first one it breaks.
pub(crate) fn check(sdp: &str, described: Described) -> Result<(), MediaError> {
    let refuse = |what: String| Err(MediaError::BadSdp(what));
    let mut sections = 0usize;
    let mut section_attributes = 0usize;
    let mut attributes = 0usize;
    for line in sdp.lines() {
        if let Some(media) = line.strip_prefix("m=") {
            sections += 1;
            section_attributes = 0;
            // `m=<media> <port> <proto> <fmt> ...`
            let formats = media.split_ascii_whitespace().skip(3).count();
            if formats > MAX_FORMATS {
                return refuse(format!(
                    "m-section {sections} lists {formats} payload types (at most {MAX_FORMATS})"
                ));
            }
            if described == Described::Offer && sections > MAX_OFFER_SECTIONS {
                return refuse(format!(
                    "the offer has more than {MAX_OFFER_SECTIONS} m-sections"
                ));
            }
        } else if line.starts_with("a=") {
            attributes += 1;
            if sections > 0 {
                section_attributes += 1;
                if section_attributes > MAX_SECTION_ATTRIBUTES {
                    return refuse(format!(
                        "m-section {sections} has more than {MAX_SECTION_ATTRIBUTES} attribute lines"
                    ));
                }
            }
            if described == Described::Offer && attributes > MAX_OFFER_ATTRIBUTES {
                return refuse(format!(
                    "the offer has more than {MAX_OFFER_ATTRIBUTES} attribute lines"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session header and `sections` video m-sections, each listing
    /// `formats` payload types and `attributes` attribute lines.
    fn offer(sections: usize, formats: usize, attributes: usize) -> String {
        let mut sdp = String::from("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
        for s in 0..sections {
            let pts: Vec<String> = (0..formats).map(|i| (i % 128).to_string()).collect();
            sdp.push_str(&format!(
                "m=video 9 UDP/TLS/RTP/SAVPF {}\r\nc=IN IP4 0.0.0.0\r\n",
                pts.join(" ")
            ));
            for i in 0..attributes {
                sdp.push_str(&format!("a=rtcp-fb:{} nack{s}\r\n", i % 128));
            }
        }
        sdp
    }

    fn refusal(sdp: &str, described: Described) -> String {
        match check(sdp, described) {
            Err(MediaError::BadSdp(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn browser_offers_fit() {
        for (_, sdp) in crate::fuzz::BROWSER_OFFERS {
            assert!(check(sdp, Described::Offer).is_ok());
            assert!(check(sdp, Described::Answer).is_ok());
        }
        let edge = offer(MAX_OFFER_SECTIONS, MAX_FORMATS, MAX_OFFER_ATTRIBUTES / 16);
        assert!(check(&edge, Described::Offer).is_ok());
    }

    #[test]
    fn too_many_payload_types_are_refused() {
        let why = refusal(&offer(2, MAX_FORMATS + 1, 4), Described::Answer);
        assert_eq!(why, "m-section 1 lists 65 payload types (at most 64)");
    }

    #[test]
    fn too_many_attributes_in_a_section_are_refused() {
        let why = refusal(&offer(1, 8, MAX_SECTION_ATTRIBUTES + 1), Described::Answer);
        assert!(why.starts_with("m-section 1 has more than 256"), "{why}");
    }

    #[test]
    fn offers_are_bounded_in_all() {
        let sections = offer(MAX_OFFER_SECTIONS + 1, 1, 1);
        assert!(check(&sections, Described::Answer).is_ok());
        assert!(refusal(&sections, Described::Offer).contains("m-sections"));
        let attributes = offer(8, 8, MAX_OFFER_ATTRIBUTES / 8 + 1);
        assert!(check(&attributes, Described::Answer).is_ok());
        assert!(refusal(&attributes, Described::Offer).contains("attribute lines"));
    }
}
