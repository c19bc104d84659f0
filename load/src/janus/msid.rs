//! Rewriting Janus's subscriber offers so every m-section's msid names the
//! publisher (its feed id), as sfud's offers do: the clients account media
//! per publisher by msid.

use std::collections::HashMap;

/// Sets the msid of each m-section whose mid is in `feeds` (mid -> feed id)
/// to `<feed> <kind>-<feed>-<mid>`, in `a=msid` and in `a=ssrc ... msid`.
pub fn rewrite(sdp: &str, feeds: &HashMap<String, u64>) -> String {
    let mut out = String::with_capacity(sdp.len() + 256);
    let mut section: Vec<&str> = Vec::new();
    for line in sdp.lines() {
        if line.starts_with("m=") && !section.is_empty() {
            emit(&mut out, &section, feeds);
            section.clear();
        }
        section.push(line);
    }
    emit(&mut out, &section, feeds);
    out
}

fn emit(out: &mut String, section: &[&str], feeds: &HashMap<String, u64>) {
    let kind = section
        .first()
        .and_then(|l| l.strip_prefix("m="))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("");
    let mid = section.iter().find_map(|l| l.strip_prefix("a=mid:"));
    let msid = mid
        .and_then(|m| feeds.get(m).map(|f| (m, *f)))
        .map(|(m, f)| format!("{f} {kind}-{f}-{m}"));
    let Some(msid) = msid else {
        for l in section {
            out.push_str(l);
            out.push_str("\r\n");
        }
        return;
    };
    let mut wrote_msid = false;
    for l in section {
        if l.starts_with("a=msid:") {
            if !wrote_msid {
                out.push_str(&format!("a=msid:{msid}\r\n"));
                wrote_msid = true;
            }
            continue;
        }
        if let Some(rest) = l.strip_prefix("a=ssrc:") {
            let mut parts = rest.splitn(2, ' ');
            let ssrc = parts.next().unwrap_or("");
            let attr = parts.next().unwrap_or("");
            if attr.starts_with("msid:") {
                out.push_str(&format!("a=ssrc:{ssrc} msid:{msid}\r\n"));
                continue;
            }
            if attr.starts_with("mslabel:") || attr.starts_with("label:") {
                continue;
            }
        }
        out.push_str(l);
        out.push_str("\r\n");
        if l.starts_with("a=mid:") && !section.iter().any(|x| x.starts_with("a=msid:")) {
            out.push_str(&format!("a=msid:{msid}\r\n"));
            wrote_msid = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nt=0 0\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:a0\r\na=sendonly\r\na=msid:janus janusa0\r\n\
a=ssrc:11 cname:janus\r\na=ssrc:11 msid:janus janusa0\r\na=ssrc:11 mslabel:janus\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:v1\r\na=sendonly\r\na=ssrc:22 cname:janus\r\n\
m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:d2\r\n";

    #[test]
    fn names_each_feed_in_msid_lines() {
        let feeds = HashMap::from([("a0".to_owned(), 7u64), ("v1".to_owned(), 9u64)]);
        let sdp = rewrite(OFFER, &feeds);
        assert!(sdp.contains("a=msid:7 audio-7-a0\r\n"), "{sdp}");
        assert!(sdp.contains("a=ssrc:11 msid:7 audio-7-a0\r\n"), "{sdp}");
        assert!(!sdp.contains("mslabel"), "{sdp}");
        // A section without msid gets one after its mid.
        assert!(sdp.contains("a=mid:v1\r\na=msid:9 video-9-v1\r\n"), "{sdp}");
        // Sections of no feed are left alone.
        assert!(sdp.ends_with("a=mid:d2\r\n"));
        assert!(sdp.starts_with("v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\n"));
    }
}
