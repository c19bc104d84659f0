//! sfud's own view of a window, from its `/metrics` read at both ends: the
//! `sfud_forwarding_delay_seconds` histogram (end-to-end latency measured by
//! the receivers also holds the generator's own receive queueing on the
//! shared cores; this is the part spent inside sfud), the simulcast layer
//! switches (`sfud_layer_switches_total`) and the subscribers' transport-wide
//! feedback it read (`sfud_transport_feedback_fast_total`).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FAMILY: &str = "sfud_forwarding_delay_seconds_bucket";
const LAYER_SWITCHES: &str = "sfud_layer_switches_total";
const FEEDBACK: &str = "sfud_transport_feedback_fast_total";
const WORKER_FORWARDED: &str = "sfud_media_worker_rtp_forwarded_total{worker=\"";

/// What one read of sfud's `/metrics` gave.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    /// The forwarding-delay histogram, if present.
    pub delay: Option<DelayBuckets>,
    /// Subscribers' simulcast layer switches so far, if present.
    pub layer_switches: Option<u64>,
    /// Subscribers' transport-wide feedback datagrams read so far.
    pub transport_feedback: Option<u64>,
    /// RTP packets each media worker forwarded so far, by worker index.
    pub worker_forwarded: Vec<u64>,
}

impl Scrape {
    /// What an exposition text holds of interest.
    pub fn parse(text: &str) -> Scrape {
        Scrape {
            delay: DelayBuckets::parse(text),
            layer_switches: unlabelled_sample(text, LAYER_SWITCHES),
            transport_feedback: unlabelled_sample(text, FEEDBACK),
            worker_forwarded: worker_samples(text, WORKER_FORWARDED),
        }
    }
}

/// The samples of a family labelled by worker index (`prefix` ends with
/// `{worker="`), as a vector indexed by worker; a worker not listed is 0.
fn worker_samples(text: &str, prefix: &str) -> Vec<u64> {
    let mut values = Vec::new();
    for line in text.lines() {
        let Some((index, value)) = line
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_once("\"} "))
        else {
            continue;
        };
        let (Ok(index), Ok(value)) = (index.parse::<usize>(), value.trim().parse::<f64>()) else {
            continue;
        };
        if index < 1024 {
            if values.len() <= index {
                values.resize(index + 1, 0);
            }
            values[index] = value as u64;
        }
    }
    values
}

/// The value of the sample `name` without labels.
fn unlabelled_sample(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        Some(value.trim().parse::<f64>().ok()? as u64)
    })
}

/// Cumulative bucket counts: `(upper bound in µs, packets)`, the last bound
/// `u64::MAX` for `+Inf`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DelayBuckets(Vec<(u64, u64)>);

impl DelayBuckets {
    /// The buckets in an exposition text; `None` if it has none.
    pub fn parse(text: &str) -> Option<DelayBuckets> {
        let mut buckets = Vec::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(FAMILY) else {
                continue;
            };
            let (le, value) = rest.strip_prefix("{le=\"")?.split_once("\"} ")?;
            let bound = match le {
                "+Inf" => u64::MAX,
                seconds => (seconds.parse::<f64>().ok()? * 1e6).round() as u64,
            };
            buckets.push((bound, value.trim().parse::<f64>().ok()? as u64));
        }
        (!buckets.is_empty()).then_some(DelayBuckets(buckets))
    }

    /// The upper bound (µs) of the bucket holding quantile `q` of what was
    /// counted between `earlier` and `self`; `None` when nothing was.
    pub fn quantile_since(&self, earlier: &DelayBuckets, q: f64) -> Option<u64> {
        let delta: Vec<(u64, u64)> = self
            .0
            .iter()
            .map(|(bound, n)| {
                let before = earlier
                    .0
                    .iter()
                    .find(|(b, _)| b == bound)
                    .map_or(0, |(_, m)| *m);
                (*bound, n.saturating_sub(before))
            })
            .collect();
        let total = delta.last()?.1;
        if total == 0 {
            return None;
        }
        let wanted = (q * total as f64).ceil() as u64;
        delta
            .iter()
            .find(|(_, n)| *n >= wanted)
            .map(|(bound, _)| *bound)
    }
}

/// Reads sfud's HTTP listener at `host_port`; `None` if it does not answer.
pub async fn read(host_port: &str) -> Option<Scrape> {
    let get = async {
        let mut stream = TcpStream::connect(host_port).await.ok()?;
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {host_port}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        Some(Scrape::parse(&body))
    };
    tokio::time::timeout(Duration::from_secs(2), get)
        .await
        .ok()
        .flatten()
}

/// `host:port` of a `ws://host:port/path` URL.
pub fn host_port(ws_url: &str) -> Option<&str> {
    let rest = ws_url
        .strip_prefix("ws://")
        .or_else(|| ws_url.strip_prefix("wss://"))?;
    rest.split('/').next().filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(counts: [u64; 4]) -> String {
        format!(
            "# TYPE sfud_forwarding_delay_seconds histogram\n\
             sfud_forwarding_delay_seconds_bucket{{le=\"0.0001\"}} {}\n\
             sfud_forwarding_delay_seconds_bucket{{le=\"0.001\"}} {}\n\
             sfud_forwarding_delay_seconds_bucket{{le=\"0.005\"}} {}\n\
             sfud_forwarding_delay_seconds_bucket{{le=\"+Inf\"}} {}\n\
             sfud_forwarding_delay_seconds_sum 1.5\n",
            counts[0], counts[1], counts[2], counts[3]
        )
    }

    #[test]
    fn quantiles_come_from_the_window_only() {
        let a = DelayBuckets::parse(&buckets([10, 10, 10, 10])).expect("parses");
        let b = DelayBuckets::parse(&buckets([10, 60, 109, 110])).expect("parses");
        // In the window: 0 under 100 µs, 50 under 1 ms, 99 under 5 ms, 100 in all.
        assert_eq!(b.quantile_since(&a, 0.5), Some(1_000));
        assert_eq!(b.quantile_since(&a, 0.99), Some(5_000));
        assert_eq!(b.quantile_since(&a, 1.0), Some(u64::MAX));
        assert_eq!(a.quantile_since(&a, 0.5), None, "nothing counted");
    }

    #[test]
    fn layer_switches_are_read_without_other_families() {
        let text = "# TYPE sfud_layer_switches_total counter\n\
                    sfud_layer_switches_total_x 9\n\
                    sfud_layer_switches_total 42\n";
        let scrape = Scrape::parse(text);
        assert_eq!(scrape.layer_switches, Some(42));
        assert_eq!(scrape.delay, None);
        assert_eq!(Scrape::parse(&buckets([1, 2, 3, 4])).layer_switches, None);
    }

    #[test]
    fn workers_are_read_by_index() {
        let text = "sfud_media_worker_rtp_forwarded_total{worker=\"1\"} 7\n\
                    sfud_media_worker_rtp_piped_total{worker=\"0\"} 99\n\
                    sfud_media_worker_rtp_forwarded_total{worker=\"0\"} 5\n\
                    sfud_media_worker_rtp_forwarded_total{worker=\"x\"} 3\n";
        assert_eq!(Scrape::parse(text).worker_forwarded, vec![5, 7]);
        assert!(Scrape::parse("janus\n").worker_forwarded.is_empty());
    }

    #[test]
    fn other_text_has_no_buckets() {
        assert_eq!(DelayBuckets::parse("janus\n"), None);
        assert_eq!(host_port("ws://127.0.0.1:8080/ws"), Some("127.0.0.1:8080"));
        assert_eq!(host_port("http://x"), None);
    }
}
