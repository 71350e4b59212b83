//! `HostConfig::from_toml` on arbitrary text: never panics, and whatever it accepts
//! passes validation again and yields its derived values (limits summary, memory cap,
//! prices, cache directory) without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let config = match agentflow::HostConfig::from_toml(text) {
        Ok(config) => config,
        Err(e) => {
            // Error messages are shown to people: formatting them must not panic.
            let _ = format!("{e:#}");
            return;
        }
    };
    config
        .validate()
        .expect("an accepted config validates again");
    let limits = &config.limits;
    let _ = limits.summary();
    assert!(
        limits.memory_bytes() > 0,
        "validated memory cap is positive"
    );
    for ms in [limits.cpu_ms, limits.wall_ms] {
        let _ = agentflow::supervisor::limits::format_ms(ms);
    }
    for price in config.llm.prices.values() {
        let _ = price.cost(u64::MAX, u64::MAX);
        let _ = price.cost(1_000, 1_000);
    }
    let _ = config.cache_dir();
    let _ = format!("{config:?}");
});
