//! The persisted runs' rows in the report's table and ratios.

use std::borrow::Cow;

use super::super::Plan;

/// The persisted runs' figures: label (`{sync}` standing for their `--sync`), JSON name.
const ROWS: &[(&str, &str)] = &[
    ("persisted 1->1 64 B msgs/s", "persisted_msgs_per_sec_64b"),
    (
        "  CPU s per million",
        "persisted_broker_cpu_sec_per_million_64b",
    ),
    ("  of in-memory 1->1", "persisted_fraction_of_memory_64b"),
    ("  written B / payload B", "persisted_write_per_payload_64b"),
    ("persisted 1->1 1 KiB msgs/s", "persisted_msgs_per_sec_1kib"),
    (
        "  CPU s per million",
        "persisted_broker_cpu_sec_per_million_1kib",
    ),
    ("  of in-memory 1->1", "persisted_fraction_of_memory_1kib"),
    (
        "  written B / payload B",
        "persisted_write_per_payload_1kib",
    ),
    (
        "x16 confirmed 64 B, sync always",
        "confirmed_always_msgs_per_sec_64b",
    ),
    (
        "  CPU s per million",
        "confirmed_always_broker_cpu_sec_per_million_64b",
    ),
    ("  fsyncs/s", "confirmed_always_fsyncs_per_sec_64b"),
    ("  msgs per fsync", "confirmed_always_msgs_per_fsync_64b"),
    (
        "  written B / payload B",
        "confirmed_always_write_per_payload_64b",
    ),
    ("  confirm p50 us", "confirmed_always_latency_p50_us_64b"),
    ("  confirm p99 us", "confirmed_always_latency_p99_us_64b"),
    (
        "x16 confirmed 64 B, sync {sync}",
        "confirmed_interval_msgs_per_sec_64b",
    ),
    (
        "  CPU s per million",
        "confirmed_interval_broker_cpu_sec_per_million_64b",
    ),
    ("  fsyncs/s", "confirmed_interval_fsyncs_per_sec_64b"),
    ("  msgs per fsync", "confirmed_interval_msgs_per_fsync_64b"),
    (
        "  written B / payload B",
        "confirmed_interval_write_per_payload_64b",
    ),
    ("  confirm p50 us", "confirmed_interval_latency_p50_us_64b"),
    ("  confirm p99 us", "confirmed_interval_latency_p99_us_64b"),
    (
        "x16 confirmed 1 KiB, sync always",
        "confirmed_always_msgs_per_sec_1kib",
    ),
    (
        "  CPU s per million",
        "confirmed_always_broker_cpu_sec_per_million_1kib",
    ),
    ("  fsyncs/s", "confirmed_always_fsyncs_per_sec_1kib"),
    ("  msgs per fsync", "confirmed_always_msgs_per_fsync_1kib"),
    (
        "  written B / payload B",
        "confirmed_always_write_per_payload_1kib",
    ),
    ("  confirm p50 us", "confirmed_always_latency_p50_us_1kib"),
    ("  confirm p99 us", "confirmed_always_latency_p99_us_1kib"),
    (
        "x16 confirmed 1 KiB, sync {sync}",
        "confirmed_interval_msgs_per_sec_1kib",
    ),
    (
        "  CPU s per million",
        "confirmed_interval_broker_cpu_sec_per_million_1kib",
    ),
    ("  fsyncs/s", "confirmed_interval_fsyncs_per_sec_1kib"),
    ("  msgs per fsync", "confirmed_interval_msgs_per_fsync_1kib"),
    (
        "  written B / payload B",
        "confirmed_interval_write_per_payload_1kib",
    ),
    ("  confirm p50 us", "confirmed_interval_latency_p50_us_1kib"),
    ("  confirm p99 us", "confirmed_interval_latency_p99_us_1kib"),
    (
        "100 msgs/s, sync always: fsyncs/s",
        "paced_always_fsyncs_per_sec",
    ),
    ("  written B / payload B", "paced_always_write_per_payload"),
    (
        "100 msgs/s, sync {sync}: fsyncs/s",
        "paced_interval_fsyncs_per_sec",
    ),
    (
        "  written B / payload B",
        "paced_interval_write_per_payload",
    ),
    ("1 GiB: fill MB/s", "gib_fill_mbytes_per_sec"),
    ("  on disk MiB", "gib_disk_mib"),
    ("  restart ms", "gib_startup_ms"),
    ("  read at restart MiB", "gib_startup_read_mib"),
    ("  empty start ms", "gib_empty_startup_ms"),
    ("  RSS MiB", "gib_rss_mib"),
    ("  RSS over empty MiB", "gib_rss_over_empty_mib"),
    ("  replay MB/s", "gib_replay_mbytes_per_sec"),
    ("  ping p99 us", "gib_ping_p99_us"),
    ("  ping max us", "gib_ping_max_us"),
    ("  ping p99 us, no replay", "gib_quiet_ping_p99_us"),
];

/// [`ROWS`] for `plan`: their labels name its `--sync`.
pub(crate) fn rows(plan: &Plan) -> impl Iterator<Item = (Cow<'static, str>, &'static str)> {
    let sync = plan
        .persist
        .as_ref()
        .map_or(String::new(), |p| p.sync.label());
    ROWS.iter()
        .map(move |&(label, key)| (Cow::Owned(label.replace("{sync}", &sync)), key))
}
