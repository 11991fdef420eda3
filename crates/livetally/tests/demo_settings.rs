//! `demo` takes `run`'s settings from the config file (and the environment)
//! for its engine and its listener, and keeps its own embedded cluster
//! whatever `[kafka]` says. No broker needed: the demo brings its own.

mod common;

use common::*;

#[test]
fn demo_takes_the_config_file() {
    let dir = std::env::temp_dir().join(unique("livetally-demo-settings"));
    std::fs::create_dir_all(&dir).expect("make a directory");
    let config = dir.join("livetally.toml");
    std::fs::write(
        &config,
        concat!(
            "http = \"127.0.0.1:0\"\n",
            "commission_rate = \"5%\"\n",
            "[kafka]\n",
            "\"security.protocol\" = \"SSL\"\n",
        ),
    )
    .expect("write the config file");
    // Port 0 from the file: the demo serves on a free port, not 8080.
    let mut demo = Livetally::spawn(&["demo", "--config", config.to_str().expect("UTF-8")]);
    let selling = wait_for("a stream that sold", DEADLINE, || {
        let streams = demo.streams();
        match streams.iter().find(|s| s["net_gmv"].as_i64() > Some(1_000)) {
            Some(stream) => Ok(stream.clone()),
            None => Err(format!("{} streams, none sold", streams.len())),
        }
    });
    let net_gmv = selling["net_gmv"].as_i64().expect("net_gmv") as f64;
    let commission = selling["commission"].as_i64().expect("commission") as f64;
    assert!(
        (commission - net_gmv * 0.05).abs() <= 0.5,
        "commission {commission} of {net_gmv} at the file's 5 %"
    );
    demo.stop_cleanly();
    let _ = std::fs::remove_dir_all(&dir);
}
