//! A cluster as managed services run them: TLS, and SCRAM-SHA-512 logins.
//! livetally's every client (consumer, producers, admin, and `gen`'s) goes
//! through the broker's SASL_SSL listener with the settings of a `--config`
//! file's `[kafka]` table, and counts exactly; a wrong password is a clear
//! error.
//!
//! This test starts a broker of its own (`deploy/local/kafka.sh` with
//! `LIVETALLY_KAFKA_SASL_SSL`): the shared one has no such listener.

mod common;

use common::*;

const EVENTS: usize = 3_000;

#[test]
fn tls_and_scram_logins_count_exactly() {
    // The shared broker's variable is required like everywhere, so that this
    // test only runs where brokers may be started (make test).
    let _ = brokers();
    let dir = std::env::temp_dir().join(unique("lt-sasl-ssl-broker"));
    let (_broker, plain, secure, config) = OwnBroker::start_sasl_ssl(dir.clone());
    let names = Names::new("sasl-ssl");
    // The test's own reads use the plaintext listener.
    create_topic(&plain, &names.topic, 2);
    let start_ts = (now_ms() - 10 * 60_000).to_string();
    let config_arg = config.to_string_lossy().into_owned();
    // gen too: the cluster's settings from the file, the topic from the
    // environment.
    finish_gen(
        livetally()
            .args(["gen", "--config", &config_arg, "--brokers", &secure])
            .args(["--events", &EVENTS.to_string(), "--streams", "6"])
            .args(["--seed", "41", "--start-ts", &start_ts])
            .env("LIVETALLY_TOPIC", &names.topic)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run livetally gen through SASL_SSL"),
    );
    let input = read_topic(&plain, &names.topic);
    assert_eq!(input.len(), EVENTS, "records gen wrote to LIVETALLY_TOPIC");
    let reference = reference_of(&input);

    let mut engine = Livetally::run_with(&secure, &names, &["--config", &config_arg]);
    let listed = engine.wait_caught_up(EVENTS as u64);
    assert_no_problems(
        "GET /v1/streams vs reference",
        &reference.diff_streams(&listed),
    );
    engine.stop_cleanly();
    // Its producers wrote through the same listener.
    let latest = checked_latest_rollups(&plain, &names.rollup, true);
    assert_no_problems(
        "rollup topic vs reference",
        &reference.diff_streams(&latest),
    );

    // A wrong password: livetally stops within its metadata timeout (10 s)
    // and says why.
    let settings = std::fs::read_to_string(&config).expect("read the client settings");
    let wrong: String = settings
        .lines()
        .map(|line| match line.starts_with("\"sasl.password\"") {
            true => "\"sasl.password\" = \"wrong\"".to_string(),
            false => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(wrong, settings, "the password was replaced");
    let wrong_config = dir.join("wrong-password.toml");
    std::fs::write(&wrong_config, wrong).expect("write the wrong settings");
    let mut args = run_args(&secure, &names);
    args.extend(["--config", wrong_config.to_str().expect("a UTF-8 path")]);
    let output = livetally().args(&args).output().expect("run livetally");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "exit status: {}", output.status);
    assert!(
        stderr.contains("Authentication failed"),
        "the error names the refused login:\n{stderr}"
    );
}
