//! What a run measured and how it is shown: one [`Report`] per run (the rows of the JSON
//! results), the summary table's lines, the ratios of one deployment's runs against the
//! baseline deployment's runs of the same scenario in the same invocation, and the plot.
//! It measures nothing itself.

use crate::client::Tally;
use crate::deployment::Usage;

#[derive(serde::Serialize, Debug, Clone)]
pub struct Report {
    pub scenario: String,
    /// The deployment measured: `1 sled` (one server on its own disk) or `3 redis` (three
    /// nodes sharing one Redis).
    pub nodes: String,
    pub n: usize,
    /// Events published: triggered events (one per channel they were sent to) or record
    /// writes acknowledged.
    pub events: u64,
    pub expected: u64,
    pub delivered: u64,
    pub missing: u64,
    /// Copies beyond what a socket should get, deliveries to a socket that should not get
    /// them, and `pusher:error`s (or failed writes): all zero in a correct run.
    pub duplicates: u64,
    pub misdelivered: u64,
    pub errors: u64,
    pub deliveries_per_sec: f64,
    /// Acknowledged (durable) record writes per second, where the scenario writes records.
    pub durable_writes_per_sec: Option<f64>,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// Summed over the nodes.
    pub server_cpu_us_per_delivery: Option<f64>,
    /// The part of it spent in the kernel (sending, mostly).
    pub server_system_us_per_delivery: Option<f64>,
    pub server_cpu_us_per_event: Option<f64>,
    /// The `redis-server`'s CPU (cluster runs).
    pub redis_cpu_us_per_delivery: Option<f64>,
    pub redis_cpu_us_per_event: Option<f64>,
    /// Commands Redis ran per event, all of them (the nodes' heartbeats and change-log reads
    /// included), and the scripts among them (commits, which a conflict repeats, and leases).
    pub redis_commands_per_event: Option<f64>,
    pub redis_scripts_per_event: Option<f64>,
    /// Summed over the nodes.
    pub server_rss_kib: Option<u64>,
    /// The generator's own CPU per delivery (it shares the machine with the server).
    pub generator_cpu_us_per_delivery: Option<f64>,
    pub note: String,
}

/// What one run measured.
pub struct Run {
    pub tally: Tally,
    pub seconds: f64,
    /// Events published (see [`Report::events`]).
    pub events: u64,
    pub usage: Usage,
}

/// p50, p90, p99 and p99.9 (ms) of latencies in µs, exact; NaN without any.
pub fn percentiles(mut latencies_us: Vec<u32>) -> [f64; 4] {
    latencies_us.sort_unstable();
    [0.5, 0.9, 0.99, 0.999].map(|q| {
        let at =
            ((latencies_us.len() as f64 * q) as usize).min(latencies_us.len().saturating_sub(1));
        latencies_us
            .get(at)
            .map_or(f64::NAN, |&us| f64::from(us) / 1e3)
    })
}

impl Report {
    /// The report of `run`; its deployment (`nodes`) is filled in by the caller.
    pub fn new(scenario: &str, n: usize, expected: u64, run: Run, note: &str) -> Report {
        let Run {
            tally,
            seconds,
            events,
            usage,
        } = run;
        let delivered = tally.latencies_us.len() as u64;
        let [p50_ms, p90_ms, p99_ms, p999_ms] = percentiles(tally.latencies_us);
        let per =
            |count: u64| move |seconds: f64| (count > 0).then(|| seconds * 1e6 / count as f64);
        let (per_delivery, per_event) = (per(delivered), per(events));
        Report {
            scenario: scenario.into(),
            nodes: String::new(),
            n,
            events,
            expected,
            delivered,
            missing: expected.saturating_sub(delivered),
            duplicates: tally.duplicates,
            misdelivered: tally.misdelivered,
            errors: tally.errors,
            deliveries_per_sec: delivered as f64 / seconds,
            durable_writes_per_sec: None,
            p50_ms,
            p90_ms,
            p99_ms,
            p999_ms,
            server_cpu_us_per_delivery: usage
                .server
                .and_then(|(user, system)| per_delivery(user + system)),
            server_system_us_per_delivery: usage
                .server
                .and_then(|(_, system)| per_delivery(system)),
            server_cpu_us_per_event: usage
                .server
                .and_then(|(user, system)| per_event(user + system)),
            redis_cpu_us_per_delivery: usage.redis.and_then(per_delivery),
            redis_cpu_us_per_event: usage.redis.and_then(per_event),
            redis_commands_per_event: usage
                .redis_commands
                .and_then(|(all, _)| (events > 0).then(|| all as f64 / events as f64)),
            redis_scripts_per_event: usage
                .redis_commands
                .and_then(|(_, scripts)| (events > 0).then(|| scripts as f64 / events as f64)),
            server_rss_kib: usage.rss,
            generator_cpu_us_per_delivery: usage.own.and_then(per_delivery),
            note: note.into(),
        }
    }

    /// Server and Redis CPU per event together (Redis counts 0 where there is none).
    fn total_cpu_us_per_event(&self) -> Option<f64> {
        self.server_cpu_us_per_event
            .map(|server| server + self.redis_cpu_us_per_event.unwrap_or(0.0))
    }
}

pub const HEADER: &str = "scenario       nodes        n  deliveries/s   p50 ms   p90 ms   p99 ms p99.9 ms  \
     server µs/delivery (sys)  µs/event  redis µs/delivery  µs/event  cmds/event (scripts)  writes/s  generator µs  run";

/// One report as a row of the summary table; anything lost or wrong is shouted.
pub fn line(report: &Report) -> String {
    let mut faults = String::new();
    for (count, what) in [
        (report.missing, "MISSING"),
        (report.duplicates, "DUPLICATED"),
        (report.misdelivered, "MISDELIVERED"),
        (report.errors, "ERRORS"),
    ] {
        if count > 0 {
            faults.push_str(&format!("  !!! {count} {what}"));
        }
    }
    let figure = |value: Option<f64>, decimals: usize| {
        value.map_or("-".into(), |value| format!("{value:.decimals$}"))
    };
    let server = report
        .server_cpu_us_per_delivery
        .zip(report.server_system_us_per_delivery)
        .map_or("-".into(), |(cpu, system)| {
            format!("{cpu:.2} ({system:.2})")
        });
    let commands = report
        .redis_commands_per_event
        .zip(report.redis_scripts_per_event)
        .map_or("-".into(), |(all, scripts)| {
            format!("{all:.2} ({scripts:.2})")
        });
    format!(
        "{:<14} {:<7} {:>7} {:>13.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2}  {:>24}  {:>8}  {:>17}  {:>8}  {:>20}  {:>8}  {:>12}  {}{faults}",
        report.scenario,
        report.nodes,
        report.n,
        report.deliveries_per_sec,
        report.p50_ms,
        report.p90_ms,
        report.p99_ms,
        report.p999_ms,
        server,
        figure(report.server_cpu_us_per_event, 2),
        figure(report.redis_cpu_us_per_delivery, 2),
        figure(report.redis_cpu_us_per_event, 2),
        commands,
        figure(report.durable_writes_per_sec, 0),
        figure(report.generator_cpu_us_per_delivery, 2),
        report.note,
    )
}

/// A run against the baseline deployment's run of the same scenario, size and load: the
/// ratios (this / baseline) of what both measured.
pub fn ratios(run: &Report, baseline: &Report) -> String {
    format!(
        "{} n={} {} / {} ({}): {}",
        run.scenario,
        run.n,
        run.nodes,
        baseline.nodes,
        run.note,
        ratio_figures(run, baseline)
    )
}

/// `run`'s figures as ratios against `baseline`'s: deliveries/s, writes/s, latency, CPU.
pub fn ratio_figures(run: &Report, baseline: &Report) -> String {
    let ratio = |this: f64, base: f64| {
        (this.is_finite() && base.is_finite() && base > 0.0 && this > 0.0)
            .then(|| format!("×{:.2}", this / base))
    };
    let both = |this: Option<f64>, base: Option<f64>| this.zip(base).and_then(|(t, b)| ratio(t, b));
    let figures = [
        (
            "deliveries/s",
            ratio(run.deliveries_per_sec, baseline.deliveries_per_sec),
        ),
        (
            "writes/s",
            both(run.durable_writes_per_sec, baseline.durable_writes_per_sec),
        ),
        ("p50", ratio(run.p50_ms, baseline.p50_ms)),
        ("p99", ratio(run.p99_ms, baseline.p99_ms)),
        (
            "server CPU/delivery",
            both(
                run.server_cpu_us_per_delivery,
                baseline.server_cpu_us_per_delivery,
            ),
        ),
        (
            "server CPU/event",
            both(
                run.server_cpu_us_per_event,
                baseline.server_cpu_us_per_event,
            ),
        ),
        (
            "server+Redis CPU/event",
            both(
                run.total_cpu_us_per_event(),
                baseline.total_cpu_us_per_event(),
            ),
        ),
    ];
    let shown: Vec<String> = figures
        .into_iter()
        .filter_map(|(name, value)| value.map(|value| format!("{name} {value}")))
        .collect();
    shown.join("  ")
}

/// Deliveries/s at saturation and p99 latency at half that rate, against N, as SVG: one line
/// per scenario and deployment.
pub fn plot(reports: &[Report], path: &str) {
    use plotters::prelude::*;
    let saturated: Vec<&Report> = reports.iter().filter(|r| r.note == "saturation").collect();
    let half: Vec<&Report> = reports
        .iter()
        .filter(|r| r.note.starts_with("paced at 50%"))
        .collect();
    if saturated.is_empty() {
        return;
    }
    let mut series: Vec<(&str, &str)> = Vec::new();
    for r in &saturated {
        let key = (r.scenario.as_str(), r.nodes.as_str());
        if !series.contains(&key) {
            series.push(key);
        }
    }
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    let _ = root.fill(&WHITE);
    let (left, right) = root.split_horizontally(450);
    let max_n = saturated.iter().map(|r| r.n).max().unwrap_or(1) as f64;
    let colors = [RED, BLUE, GREEN, MAGENTA, CYAN, BLACK];
    let draw = |area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
                title: &str,
                runs: &[&Report],
                value: &dyn Fn(&Report) -> f64| {
        let top = runs
            .iter()
            .map(|r| value(r))
            .filter(|v| v.is_finite())
            .fold(1.0, f64::max);
        let Ok(mut chart) = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..max_n * 1.05, 0.0..top * 1.1)
        else {
            return;
        };
        let _ = chart.configure_mesh().x_desc("N (sockets)").draw();
        for (&(scenario, nodes), color) in series.iter().zip(colors.iter().cycle()) {
            let color = *color;
            let points: Vec<(f64, f64)> = runs
                .iter()
                .filter(|r| r.scenario == scenario && r.nodes == nodes)
                .map(|r| (r.n as f64, value(r)))
                .collect();
            if let Ok(drawn) = chart.draw_series(LineSeries::new(points.clone(), color)) {
                drawn
                    .label(format!("{scenario} ({nodes})"))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
            }
            let _ = chart.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            );
        }
        let _ = chart.configure_series_labels().border_style(BLACK).draw();
    };
    draw(&left, "deliveries/s at saturation", &saturated, &|r| {
        r.deliveries_per_sec
    });
    draw(&right, "p99 latency (ms) at 50% of it", &half, &|r| {
        r.p99_ms
    });
    let _ = root.present();
    println!("plot: {path}");
}
