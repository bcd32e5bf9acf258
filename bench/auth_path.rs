//! The cost of the auth + limits path. Calls `GET /healthz` (no credential: routing and the
//! route-table lookup only) and `GET /api/v1/auth/whoami` (authentication from the cache, the
//! route table's check and every limit of the key and its tenant, then a tiny JSON answer),
//! first one at a time for latency, then from many connections for throughput; the
//! difference is what auth and limits add. Usage: auth_path BASE_URL KEY [REQUESTS] [CONNECTIONS]

use std::time::{Duration, Instant};

use futures::StreamExt as _;

struct Run {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Run {
    fn percentile(&self, p: f64) -> Duration {
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i]
    }

    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

async fn run(
    client: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    requests: usize,
    connections: usize,
) -> anyhow::Result<Run> {
    let started = Instant::now();
    let mut latencies: Vec<Duration> = futures::stream::iter(0..requests)
        .map(|_| async {
            let mut request = client.get(url);
            if let Some(key) = key {
                request = request.bearer_auth(key);
            }
            let sent = Instant::now();
            let response = request.send().await?;
            anyhow::ensure!(response.status().is_success(), "{url}: {}", response.status());
            response.bytes().await?;
            Ok(sent.elapsed())
        })
        .buffer_unordered(connections)
        .collect::<Vec<anyhow::Result<Duration>>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let elapsed = started.elapsed();
    latencies.sort();
    Ok(Run { latencies, elapsed })
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: auth_path BASE_URL KEY [REQUESTS] [CONNECTIONS]";
    let base = args.next().ok_or_else(|| anyhow::anyhow!(usage))?;
    let key = args.next().ok_or_else(|| anyhow::anyhow!(usage))?;
    let requests: usize = args.next().map_or(Ok(20_000), |s| s.parse())?;
    let connections: usize = args.next().map_or(Ok(32), |s| s.parse())?;
    let client = reqwest::Client::builder().pool_max_idle_per_host(connections).build()?;
    let (public, authed) = (format!("{base}/healthz"), format!("{base}/api/v1/auth/whoami"));
    // Warm up: connections, the key cache, the limits' leases.
    run(&client, &authed, Some(&key), 2_000, connections).await?;
    run(&client, &public, None, 2_000, connections).await?;

    let bare = run(&client, &public, None, requests, 1).await?;
    let auth = run(&client, &authed, Some(&key), requests, 1).await?;
    println!("one at a time, {requests} requests each:");
    for (name, r) in [("GET /healthz (no auth)", &bare), ("GET /api/v1/auth/whoami (auth + limits)", &auth)] {
        println!("  {name:42} p50 {:7.1} µs  p99 {:7.1} µs", micros(r.percentile(0.5)), micros(r.percentile(0.99)));
    }
    println!(
        "  added by auth + limits:                    p50 {:7.1} µs  p99 {:7.1} µs",
        micros(auth.percentile(0.5)) - micros(bare.percentile(0.5)),
        micros(auth.percentile(0.99)) - micros(bare.percentile(0.99))
    );
    let bare = run(&client, &public, None, requests, connections).await?;
    let auth = run(&client, &authed, Some(&key), requests, connections).await?;
    println!("{connections} connections, {requests} requests each:");
    println!("  GET /healthz                               {:8.0} requests/s", bare.per_second());
    println!("  GET /api/v1/auth/whoami                    {:8.0} requests/s", auth.per_second());
    Ok(())
}
