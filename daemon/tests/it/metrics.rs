//! `GET /metrics` and `/healthz`: the exposition parses strictly as
//! Prometheus text format and its counters move while media flows.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use sfu_client::{Client, PublishOptions};
use sfu_proto::signaling::Role;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{TestServer, DEADLINE};

/// An HTTP response: status, lower-cased headers, body.
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET path` over HTTP/1.1 with `Connection: close`.
pub async fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("HTTP connects");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("request sent");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("response read");
        raw
    };
    let raw = tokio::time::timeout(DEADLINE, fetch)
        .await
        .expect("HTTP response within the deadline");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("headers end");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    assert!(
        !headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")),
        "chunked responses are not expected here"
    );
    HttpResponse {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// One parsed exposition: series (`name{labels}` as written) to value, and
/// each family's type.
#[derive(Debug, Default)]
pub struct Exposition {
    pub samples: BTreeMap<String, f64>,
    pub types: BTreeMap<String, String>,
}

impl Exposition {
    /// The value of a series; panics when absent.
    pub fn get(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no series {series} in {:?}", self.samples.keys()))
    }
}

fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

/// Label names and values, in order.
type Labels = Vec<(String, String)>;

/// Parses `{a="x",b="y"}` strictly; returns the labels and the rest.
fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    let mut rest = s.strip_prefix('{').ok_or("expected {")?;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !valid_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().ok_or("unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("dangling escape")?.1 {
                    '\\' => value.push('\\'),
                    '"' => value.push('"'),
                    'n' => value.push('\n'),
                    c => return Err(format!("bad escape \\{c}")),
                },
                (_, '\n') => return Err("newline in label value".into()),
                (_, c) => value.push(c),
            }
        };
        labels.push((name.to_owned(), value));
        rest = &rest[end + 1..];
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("expected , or } after a label".into());
        }
    }
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("bad value {s:?}")),
    }
}

/// Parses Prometheus text format 0.0.4 strictly: every line is a comment,
/// a HELP/TYPE line or a sample; TYPE comes at most once per family and
/// before its samples; a family's samples are contiguous; no series twice;
/// counters are never negative.
pub fn parse_exposition(text: &str) -> Result<Exposition, String> {
    if !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    let mut out = Exposition::default();
    let mut helped = HashSet::new();
    let mut finished = HashSet::<String>::new();
    let mut current: Option<String> = None;
    let family_of = |name: &str, types: &BTreeMap<String, String>| -> String {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if types
                    .get(base)
                    .is_some_and(|t| t == "histogram" || t == "summary")
                {
                    return base.to_owned();
                }
            }
        }
        name.to_owned()
    };
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            let (kind, name) = (words.next(), words.next());
            let rest = words.next().unwrap_or("");
            match (kind, name) {
                (Some("HELP"), Some(name))
                    if !valid_metric_name(name) || !helped.insert(name.to_owned()) =>
                {
                    return Err(at("bad or repeated HELP".into()));
                }
                (Some("TYPE"), Some(name)) => {
                    if !valid_metric_name(name) {
                        return Err(at("bad metric name".into()));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&rest) {
                        return Err(at(format!("unknown type {rest:?}")));
                    }
                    if out.types.contains_key(name)
                        || finished.contains(name)
                        || current.as_deref() == Some(name)
                    {
                        return Err(at("TYPE repeated or after samples".into()));
                    }
                    out.types.insert(name.to_owned(), rest.to_owned());
                }
                _ => {}
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| at("sample without a value".into()))?;
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return Err(at("bad metric name".into()));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(at)?
        } else {
            (Vec::new(), &line[name_end..])
        };
        let mut fields = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?
            .split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|_| at(format!("bad timestamp {ts:?}")))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing fields".into()));
        }
        let family = family_of(name, &out.types);
        if current.as_deref() != Some(family.as_str()) {
            if finished.contains(&family) {
                return Err(at(format!("samples of {family} are not contiguous")));
            }
            if let Some(previous) = current.replace(family.clone()) {
                finished.insert(previous);
            }
        }
        if out.types.get(&family).is_some_and(|t| t == "counter") && (value.is_nan() || value < 0.0)
        {
            return Err(at("negative counter".into()));
        }
        let series = if labels.is_empty() {
            name.to_owned()
        } else {
            let shown: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            format!("{name}{{{}}}", shown.join(","))
        };
        if out.samples.insert(series.clone(), value).is_some() {
            return Err(at(format!("series {series} twice")));
        }
    }
    Ok(out)
}

#[test]
fn the_parser_rejects_what_prometheus_rejects() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{cause=\"x\\\"y\"} 3\na_total{cause=\"z\"} 1 1700000000000\n# TYPE b gauge\nb -1.5e3\n";
    let parsed = parse_exposition(good).expect("valid exposition");
    assert_eq!(parsed.get("a_total{cause=\"x\\\"y\"}"), 3.0);
    assert_eq!(parsed.get("b"), -1500.0);
    for bad in [
        "a 1",                      // no final newline
        "a{b=\"c\" 1\n",            // unterminated labels
        "a{b=c} 1\n",               // unquoted value
        "a one\n",                  // not a number
        "1a 1\n",                   // bad name
        "a 1\na 2\n",               // same series twice
        "a 1\nb 1\na{x=\"y\"} 1\n", // family split
        "# TYPE a counter\na -1\n", // negative counter
        "a 1\n# TYPE a gauge\n",    // TYPE after samples
        "# TYPE a countr\na 1\n",   // unknown type
        "a{b=\"\\q\"} 1\n",         // bad escape
        "a  1\n",                   // two spaces
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}

pub(crate) async fn scrape(server: &TestServer) -> Exposition {
    let response = http_get(server.http, "/metrics").await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    parse_exposition(&response.body)
        .unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{}", response.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_move_while_media_flows() {
    let server = TestServer::start().await;
    let health = http_get(server.http, "/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));

    let idle = scrape(&server).await;
    for (family, kind) in [
        ("sfud_rooms", "gauge"),
        ("sfud_peers", "gauge"),
        ("sfud_tracks", "gauge"),
        ("sfud_recording_sessions", "gauge"),
        ("sfud_rtp_packets_forwarded_total", "counter"),
        ("sfud_rtp_bytes_forwarded_total", "counter"),
        ("sfud_rtp_packets_retransmitted_total", "counter"),
        ("sfud_fast_path_connections", "gauge"),
        ("sfud_forwarding_delay_seconds", "histogram"),
        ("sfud_publish_setup_seconds", "histogram"),
        ("sfud_subscribe_setup_seconds", "histogram"),
        ("sfud_dropped_packets_total", "counter"),
        ("sfud_signaling_refusals_total", "counter"),
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
    ] {
        assert_eq!(
            idle.types.get(family).map(String::as_str),
            Some(kind),
            "{family}"
        );
    }
    assert_eq!(idle.get("sfud_rooms"), 0.0);
    assert_eq!(idle.get("sfud_recording_sessions"), 0.0);
    assert_eq!(idle.get("sfud_rtp_packets_forwarded_total"), 0.0);
    assert!(idle.get("process_resident_memory_bytes") > 1e6);
    for cause in ["unroutable", "send", "subscriber"] {
        idle.get(&format!("sfud_dropped_packets_total{{cause=\"{cause}\"}}"));
    }

    let mut clients = Vec::new();
    for name in ["alice", "bob"] {
        let c = Client::connect(&server.ws_url()).await.expect("connects");
        c.join("metered", name, Role::Speaker).await.expect("joins");
        c.publish(PublishOptions::default())
            .await
            .expect("publishes");
        clients.push(c);
    }
    clients[0]
        .wait_for(Duration::from_secs(15), "video from bob", |s| {
            s.remote_tracks.iter().any(|t| t.packets >= 50)
        })
        .await
        .expect("media flows");
    let busy = scrape(&server).await;
    assert_eq!(busy.get("sfud_rooms"), 1.0);
    assert_eq!(busy.get("sfud_peers"), 2.0);
    assert_eq!(busy.get("sfud_tracks"), 4.0);
    assert_eq!(busy.get("sfud_peer_connections"), 4.0);
    assert_eq!(
        busy.get("sfud_fast_path_connections"),
        2.0,
        "both subscribe connections forward on the fast path"
    );
    let forwarded = busy.get("sfud_rtp_packets_forwarded_total");
    assert!(forwarded >= 50.0, "{forwarded}");
    // Every forwarded packet's time in the loop is in the histogram.
    assert_eq!(busy.get("sfud_forwarding_delay_seconds_count"), forwarded);
    assert_eq!(
        busy.get(r#"sfud_forwarding_delay_seconds_bucket{le="+Inf"}"#),
        forwarded
    );
    assert!(busy.get(r#"sfud_forwarding_delay_seconds_bucket{le="0.1"}"#) <= forwarded);
    assert!(busy.get("sfud_forwarding_delay_seconds_sum") > 0.0);
    // Both participants' connections came up, each counted once, in well
    // under the connect deadline.
    for pc in ["publish", "subscribe"] {
        assert_eq!(
            busy.get(&format!("sfud_{pc}_setup_seconds_count")),
            2.0,
            "{pc}"
        );
        assert_eq!(
            busy.get(&format!(r#"sfud_{pc}_setup_seconds_bucket{{le="5"}}"#)),
            2.0,
            "{pc}"
        );
    }
    assert!(busy.get("sfud_rtp_bytes_forwarded_total") > forwarded * 10.0);
    assert!(busy.get("sfud_udp_bytes_received_total") > idle.get("sfud_udp_bytes_received_total"));

    // Counters keep moving between scrapes while media flows.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let later = scrape(&server).await;
        if later.get("sfud_rtp_packets_forwarded_total") > forwarded {
            assert!(
                later.get("sfud_rtp_bytes_forwarded_total")
                    > busy.get("sfud_rtp_bytes_forwarded_total")
            );
            assert!(later.get("process_cpu_seconds_total") > 0.0);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "forwarded packets stopped moving"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for c in clients {
        c.close().await;
    }
    server.stop().await;
}
