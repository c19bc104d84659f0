//! Sections of the benchmark document beside the webinar: the simulcast
//! run and the many-small-rooms scenario.

use std::fmt::Write as _;

use super::{comparison_rows, ms, per_min, ratio, us};
use crate::report::Window;

/// The simulcast run next to the plain one: CPU per forwarded packet and
/// the ratio, what was forwarded, and the layer switches.
pub(crate) fn simulcast_section(
    d: &mut String,
    plain: &Window,
    sim: &Window,
    (plain_floor, sim_floor): (Option<f64>, Option<f64>),
) {
    let _ = writeln!(d, "### Simulcast\n");
    let _ = writeln!(
        d,
        "The same load with a simulcast publisher: {}. The publisher sends the layers \
         `q`, `h` and `f` (1/16, 1/4 and all of the video packet rate, each its own SSRC \
         carrying the mid and rtp-stream-id header extensions, as browsers send them); \
         subscriber i asks for layer i mod 3 (`track_settings` with `max_layer`). sfud \
         receives every layer and forwards one per subscriber, so it takes in more and sends \
         out less than in the plain run; the figure is still CPU per packet the subscribers \
         received. The forwarder's floor is the floor's cost (below) of what each \
         subscriber receives, each video frame in one GSO send and audio one send per \
         packet: a lower layer's frame is one or two packets, not five, and audio is a larger \
         share, so even the floor costs more per packet for the simulcast run's mix.\n",
        sim.scenario.describe()
    );
    let _ = writeln!(d, "| | plain | simulcast | simulcast / plain |");
    let _ = writeln!(d, "|---|---:|---:|---:|");
    let _ = writeln!(
        d,
        "| CPU µs per forwarded packet | {} | {} | **{}** |",
        us(plain.sfu_cpu_us_per_packet),
        us(sim.sfu_cpu_us_per_packet),
        ratio(sim.sfu_cpu_us_per_packet, plain.sfu_cpu_us_per_packet)
    );
    let _ = writeln!(
        d,
        "| the forwarder's floor for what subscribers receive, µs per packet | {} | {} | {} |",
        us(plain_floor),
        us(sim_floor),
        ratio(sim_floor, plain_floor)
    );
    let _ = writeln!(
        d,
        "| packets/s in from the publisher | {:.0} | {:.0} | {} |",
        plain.packets_in_per_s,
        sim.packets_in_per_s,
        ratio(Some(sim.packets_in_per_s), Some(plain.packets_in_per_s))
    );
    let _ = writeln!(
        d,
        "| forwarded packets/s (expected) | {:.0} ({:.0}) | {:.0} ({:.0}) | {} |",
        plain.packets_out_per_s,
        plain.packets_out_expected_per_s,
        sim.packets_out_per_s,
        sim.packets_out_expected_per_s,
        ratio(Some(sim.packets_out_per_s), Some(plain.packets_out_per_s))
    );
    let _ = writeln!(
        d,
        "| SFU CPU, % of one core | {:.0} | {:.0} | - |",
        plain.sfu_cpu_percent.unwrap_or(0.0),
        sim.sfu_cpu_percent.unwrap_or(0.0)
    );
    let _ = writeln!(
        d,
        "| latency at the receivers p50 / p99, ms | {} / {} | {} / {} | - |",
        ms(plain.latency_p50_us),
        ms(plain.latency_p99_us),
        ms(sim.latency_p50_us),
        ms(sim.latency_p99_us)
    );
    let _ = writeln!(
        d,
        "| loss / duplicates | {} / {} | {} / {} | - |",
        plain.lost, plain.duplicates, sim.lost, sim.duplicates
    );
    let _ = writeln!(
        d,
        "| layer switches in the window (per subscriber per minute) | - | {} ({}) | - |\n",
        sim.layer_switches.map_or("-".into(), |n| n.to_string()),
        per_min(sim.layer_switches_per_subscriber_per_min)
    );
}

/// Many small rooms, everyone publishing: sfud next to Janus.
pub(crate) fn rooms_section(d: &mut String, s: &Window, j: &Window) {
    let _ = writeln!(d, "### Many small rooms\n");
    let _ = writeln!(
        d,
        "Most deployments are many small calls, not one webinar: {}, every participant \
         publishing the same audio and video and receiving everyone else's. Both SFUs ran \
         it in the same run, after the webinar.\n",
        s.scenario.describe()
    );
    let _ = writeln!(d, "| | sfud | Janus | sfud / Janus |");
    let _ = writeln!(d, "|---|---:|---:|---:|");
    let _ = writeln!(
        d,
        "| CPU µs per forwarded packet | {} | {} | **{}** |",
        us(s.sfu_cpu_us_per_packet),
        us(j.sfu_cpu_us_per_packet),
        ratio(s.sfu_cpu_us_per_packet, j.sfu_cpu_us_per_packet)
    );
    comparison_rows(d, s, j);
    let _ = writeln!(d);
}
