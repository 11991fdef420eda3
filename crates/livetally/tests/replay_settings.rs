//! `replay` takes its settings where `run` does: flags over `LIVETALLY_*`
//! variables over the `--config` file (a `run` config, other keys and all)
//! over the defaults, so that replaying `run`'s input counts as `run` did.
//! No broker needed.

mod common;

use common::livetally;
use serde_json::Value;

const T: i64 = 1_764_120_000_000;

/// A purchase of 3 × 1999 (commission 599.7 at 10 %), and one record of
/// 400 bytes or so.
fn events() -> String {
    let padding = "x".repeat(300);
    format!(
        concat!(
            r#"{{"event_id":"e1","type":"view","stream_id":"s1","viewer_id":"v1","ts":{t0}}}"#,
            "\n",
            r#"{{"event_id":"e2","type":"purchase","stream_id":"s1","viewer_id":"v1","ts":{t1},"#,
            r#""product_id":"p1","order_id":"o1","quantity":3,"unit_price":1999,"currency":"USD"}}"#,
            "\n",
            r#"{{"event_id":"e3","type":"like","stream_id":"s2","viewer_id":"v2","ts":{t2},"note":"{padding}"}}"#,
            "\n",
        ),
        t0 = T,
        t1 = T + 1_000,
        t2 = T + 60_000,
        padding = padding,
    )
}

/// `livetally replay FILE ARGS` with `env`: s1's commission and the number
/// of `too_large` records.
fn replay(file: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (i64, u64) {
    let output = livetally()
        .arg("replay")
        .args(args)
        .arg(file)
        .envs(env.iter().copied())
        .output()
        .expect("run livetally replay");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "replay {args:?} {env:?}: {stderr}");
    let s1: Value = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("a JSON rollup"))
        .find(|rollup| rollup["stream_id"] == "s1")
        .expect("s1's rollup");
    let summary: Value =
        serde_json::from_str(stderr.lines().last().expect("a summary")).expect("a JSON summary");
    (
        s1["commission"].as_i64().expect("commission"),
        summary["invalid"]["too_large"].as_u64().expect("too_large"),
    )
}

#[test]
fn replay_reads_flags_environment_and_config_file_like_run() {
    let dir =
        std::env::temp_dir().join(format!("livetally-replay-settings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("make a directory");
    let file = dir.join("events.ndjson");
    std::fs::write(&file, events()).expect("write the events");
    let config = dir.join("livetally.toml");
    std::fs::write(
        &config,
        concat!(
            "brokers = \"kafka-1:9092\"\n",
            "commission_rate = \"7.5%\"\n",
            "max_event_bytes = 300\n",
            "[kafka]\n",
            "\"security.protocol\" = \"SSL\"\n",
        ),
    )
    .expect("write the config file");
    let config = config.to_str().expect("a UTF-8 path");

    assert_eq!(replay(&file, &[], &[]), (600, 0), "defaults: 10 %, 64 KiB");
    assert_eq!(
        replay(&file, &[], &[("LIVETALLY_COMMISSION_RATE", "5%")]),
        (300, 0),
        "the environment: 299.85 rounds to 300"
    );
    assert_eq!(
        replay(&file, &["--config", config], &[]),
        (450, 1),
        "the file: 7.5 % (449.775), and records over 300 bytes are too large"
    );
    assert_eq!(
        replay(
            &file,
            &["--config", config],
            &[("LIVETALLY_COMMISSION_RATE", "5%")]
        ),
        (300, 1),
        "the environment over the file"
    );
    assert_eq!(
        replay(
            &file,
            &["--config", config, "--commission-rate", "20%"],
            &[("LIVETALLY_COMMISSION_RATE", "5%")]
        ),
        (1199, 1),
        "a flag over both: 1199.4"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
