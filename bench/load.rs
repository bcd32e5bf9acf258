//! Load and overload against a running `serve --role all`: CLIENTS concurrent clients, each
//! sending one request after another for SECONDS. In `mixed`, six requests in ten are one-
//! sentence embeddings and four are management reads (model list, a version, OpenAI's model
//! list, whoami); in `embed`, every request is an embedding. Meanwhile the server's resident
//! memory is read from /proc every second.
//!
//! Prints, per kind of request, the count, statuses and p50/p99 latency; every answer other
//! than 200, with whether a 429/503 carried `Retry-After`; and RSS at the start, its peak and
//! at the end of each third of the run. Exits non-zero when `--expect ok` sees any answer
//! but 200, or `--expect shed` sees anything but 200/429/503, or a 429/503 without
//! `Retry-After`.
//!
//! Usage: load BASE_URL KEY TENANT MODEL SERVER_PID CLIENTS SECONDS mixed|embed ok|shed

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    statuses: BTreeMap<u16, u64>,
    shed_without_retry_after: u64,
    transport_errors: u64,
}

struct Target {
    base: String,
    key: String,
    tenant: String,
    model: String,
    mix: bool,
}

/// Sentences of 5 to 30 words, as in the quick-start benchmark.
fn sentences() -> Vec<String> {
    let words: Vec<&str> = "a man woman child dog cat is are was eating playing riding guitar horse food bread the \
        on in with of and quickly slowly big small red green house street park river music plays sings runs"
        .split_whitespace()
        .collect();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    (0..1024)
        .map(|_| {
            let len = 5 + next(26);
            let mut s: Vec<&str> = (0..len).map(|_| words[next(words.len())]).collect();
            s.push(".");
            s.join(" ")
        })
        .collect()
}

async fn client(
    http: reqwest::Client,
    target: Arc<Target>,
    sentences: Arc<Vec<String>>,
    id: usize,
    until: Instant,
    tallies: Arc<Mutex<BTreeMap<&'static str, Tally>>>,
) {
    let mut n = id;
    while Instant::now() < until {
        n += 1;
        let t = &target;
        let (kind, request) = match (t.mix, n % 10) {
            (true, 6) => ("models", http.get(format!("{}/api/v1/tenants/{}/models", t.base, t.tenant))),
            (true, 7) => {
                ("version", http.get(format!("{}/api/v1/tenants/{}/models/{}/versions/1", t.base, t.tenant, t.model)))
            }
            (true, 8) => ("v1/models", http.get(format!("{}/v1/models", t.base))),
            (true, 9) => ("whoami", http.get(format!("{}/api/v1/auth/whoami", t.base))),
            _ => {
                let input = &sentences[n % sentences.len()];
                let body = serde_json::json!({ "model": t.model, "input": input });
                ("embeddings", http.post(format!("{}/v1/embeddings", t.base)).json(&body))
            }
        };
        let sent = Instant::now();
        let answer = request.bearer_auth(&t.key).send().await;
        let (status, retry_after) = match answer {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response.headers().contains_key("retry-after");
                let complete = response.bytes().await.is_ok();
                (complete.then_some(status), retry_after)
            }
            Err(_) => (None, false),
        };
        let latency = sent.elapsed();
        {
            let mut tallies = tallies.lock().expect("not poisoned");
            let tally = tallies.entry(kind).or_default();
            match status {
                Some(status) => {
                    *tally.statuses.entry(status).or_default() += 1;
                    if matches!(status, 429 | 503) && !retry_after {
                        tally.shed_without_retry_after += 1;
                    }
                    if status == 200 {
                        tally.latencies.push(latency);
                    }
                }
                None => tally.transport_errors += 1,
            }
        }
        if matches!(status, Some(429 | 503)) {
            // A client that honours Retry-After would wait; this one comes back soon, to keep
            // the pressure on.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, key, tenant, model, pid, clients, seconds, mix, expect] = args.as_slice() else {
        anyhow::bail!("usage: load BASE_URL KEY TENANT MODEL SERVER_PID CLIENTS SECONDS mixed|embed ok|shed");
    };
    let pid: u32 = pid.parse().context("SERVER_PID")?;
    let clients: usize = clients.parse().context("CLIENTS")?;
    let seconds: u64 = seconds.parse().context("SECONDS")?;
    let target = Arc::new(Target {
        base: base.clone(),
        key: key.clone(),
        tenant: tenant.clone(),
        model: model.clone(),
        mix: mix == "mixed",
    });
    let http = reqwest::Client::builder().pool_max_idle_per_host(clients).timeout(Duration::from_secs(60)).build()?;
    let sentences = Arc::new(sentences());
    let tallies = Arc::new(Mutex::new(BTreeMap::new()));
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let rss_start = rss_kib(pid).context("the server's /proc status")?;
    let sampler = tokio::spawn(async move {
        let mut samples = Vec::new();
        while Instant::now() < until {
            if let Some(kib) = rss_kib(pid) {
                samples.push((started.elapsed().as_secs_f64(), kib));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        samples
    });
    let tasks: Vec<_> = (0..clients)
        .map(|id| tokio::spawn(client(http.clone(), target.clone(), sentences.clone(), id, until, tallies.clone())))
        .collect();
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let samples = sampler.await?;

    println!("{clients} clients, {seconds} s, {mix}: {:.1} s", elapsed);
    println!("| request | answered | per second | statuses | p50 ms | p99 ms |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut failed = Vec::new();
    let mut tallies = tallies.lock().expect("not poisoned");
    let mut all = Vec::new();
    for (kind, tally) in tallies.iter_mut() {
        tally.latencies.sort();
        all.extend_from_slice(&tally.latencies);
        let answered: u64 = tally.statuses.values().sum();
        let statuses: Vec<String> = tally.statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        println!(
            "| {kind} | {answered} | {:.0} | {} | {:.1} | {:.1} |",
            answered as f64 / elapsed,
            statuses.join(", "),
            percentile(&tally.latencies, 0.50),
            percentile(&tally.latencies, 0.99),
        );
        for (status, n) in &tally.statuses {
            let allowed = match expect.as_str() {
                "ok" => *status == 200,
                _ => matches!(status, 200 | 429 | 503),
            };
            if !allowed {
                failed.push(format!("{kind}: {n} answered {status}"));
            }
        }
        if tally.shed_without_retry_after > 0 {
            failed.push(format!("{kind}: {} 429/503 without Retry-After", tally.shed_without_retry_after));
        }
        if tally.transport_errors > 0 {
            failed.push(format!("{kind}: {} requests got no complete answer", tally.transport_errors));
        }
    }
    all.sort();
    println!("all 200s: p50 {:.1} ms, p99 {:.1} ms", percentile(&all, 0.50), percentile(&all, 0.99));
    let mib = |kib: u64| kib as f64 / 1024.0;
    let peak = samples.iter().map(|(_, k)| *k).max().unwrap_or(rss_start);
    let third = |i: usize| {
        let at = elapsed * i as f64 / 3.0;
        samples.iter().filter(|(t, _)| *t <= at).map(|(_, k)| *k).next_back().unwrap_or(rss_start)
    };
    println!(
        "server RSS: {:.0} MiB at the start, {:.0} / {:.0} / {:.0} MiB after each third, peak {:.0} MiB",
        mib(rss_start),
        mib(third(1)),
        mib(third(2)),
        mib(third(3)),
        mib(peak)
    );
    if failed.is_empty() {
        println!("PASS ({expect})");
        Ok(())
    } else {
        anyhow::bail!("FAIL ({expect}): {}", failed.join("; "))
    }
}
