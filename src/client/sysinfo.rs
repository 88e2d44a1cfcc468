//! What `goclaw node` reports about its machine, read from `/proc`, `/sys`
//! and `/etc` with no crate beyond the ones the gateway already has. Every
//! figure is optional: what a machine does not have (a thermal zone, an
//! IPv6 route) is `null`, never an error.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use serde_json::{Value, json};

use crate::ops::process::status_kib;

/// The `device.status` payload: uptime, load, memory, root filesystem, CPU
/// temperature and primary addresses.
pub fn device_status() -> Value {
    let (total, available) = read("/proc/meminfo").map_or((None, None), |text| meminfo(&text));
    let root = root_filesystem();
    json!({
        "uptimeSeconds": read("/proc/uptime").and_then(|text| first_number(&text)),
        "loadAverage": read("/proc/loadavg").map(|text| loadavg(&text)),
        "memory": {"totalBytes": total, "availableBytes": available},
        "rootFilesystem": {"totalBytes": root.map(|r| r.0), "freeBytes": root.map(|r| r.1)},
        "cpuTemperatureC": cpu_temperature(),
        "addresses": {
            "ipv4": primary_address(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
            "ipv6": primary_address(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1))),
        },
    })
}

/// The `system.info` payload: hostname, kernel, OS release, architecture and
/// goclaw version.
pub fn system_info() -> Value {
    json!({
        "hostname": hostname(),
        "kernel": read("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()),
        "os": read("/etc/os-release").or_else(|| read("/usr/lib/os-release")).and_then(|text| os_release(&text)),
        "arch": std::env::consts::ARCH,
        "goclawVersion": env!("CARGO_PKG_VERSION"),
    })
}

/// The machine's host name (the node id by default).
pub fn hostname() -> Option<String> {
    let name = read("/proc/sys/kernel/hostname")?.trim().to_string();
    (!name.is_empty()).then_some(name)
}

fn read(path: &str) -> Option<String> {
    fs::read_to_string(path).ok()
}

fn first_number(text: &str) -> Option<f64> {
    text.split_whitespace().next()?.parse().ok()
}

/// `/proc/loadavg`: the 1, 5 and 15 minute averages.
fn loadavg(text: &str) -> Vec<f64> {
    text.split_whitespace().take(3).filter_map(|n| n.parse().ok()).collect()
}

/// `/proc/meminfo`: MemTotal and MemAvailable, in bytes.
fn meminfo(text: &str) -> (Option<u64>, Option<u64>) {
    let bytes = |key| status_kib(text, key).map(|kib| kib * 1024);
    (bytes("MemTotal:"), bytes("MemAvailable:"))
}

/// `PRETTY_NAME` from os-release, unquoted.
fn os_release(text: &str) -> Option<String> {
    let value = text.lines().find_map(|l| l.strip_prefix("PRETTY_NAME="))?;
    let value = value.trim().trim_matches('"').trim_matches('\'');
    (!value.is_empty()).then(|| value.to_string())
}

/// Size and space available to unprivileged users of `/`, in bytes.
fn root_filesystem() -> Option<(u64, u64)> {
    let stats = nix::sys::statvfs::statvfs("/").ok()?;
    let block = stats.fragment_size() as u64;
    Some((stats.blocks() as u64 * block, stats.blocks_available() as u64 * block))
}

/// The CPU's temperature in °C: the thermal zone whose type names the CPU
/// (or the SoC), else the first zone; `None` without any.
fn cpu_temperature() -> Option<f64> {
    let mut zones: Vec<_> = fs::read_dir("/sys/class/thermal")
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("thermal_zone")))
        .collect();
    zones.sort();
    let is_cpu = |zone: &std::path::PathBuf| {
        let kind = fs::read_to_string(zone.join("type")).unwrap_or_default().to_ascii_lowercase();
        ["cpu", "x86_pkg", "soc", "core"].iter().any(|k| kind.contains(k))
    };
    let zone = zones.iter().find(|z| is_cpu(z)).or(zones.first())?;
    let millidegrees: f64 = fs::read_to_string(zone.join("temp")).ok()?.trim().parse().ok()?;
    Some((millidegrees / 100.0).round() / 10.0)
}

/// The address this machine would send from to reach `towards` (a
/// documentation address): connecting a UDP socket picks the route and
/// sends nothing.
fn primary_address(towards: IpAddr) -> Option<String> {
    let local: SocketAddr = match towards {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).ok()?;
    socket.connect((towards, 9)).ok()?;
    Some(socket.local_addr().ok()?.ip().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_and_os_release() {
        let meminfo_text = "MemTotal:        2048000 kB\nMemFree:  100 kB\nMemAvailable:    1024000 kB\n";
        assert_eq!(meminfo(meminfo_text), (Some(2048000 * 1024), Some(1024000 * 1024)));
        assert_eq!(meminfo("MemTotalX: 5 kB\n"), (None, None));
        assert_eq!(loadavg("0.52 0.58 0.59 1/467 12345\n"), vec![0.52, 0.58, 0.59]);
        assert_eq!(first_number("12345.67 54321.00\n"), Some(12345.67));
        let release = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(os_release(release).as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!(os_release("ID=alpine\n"), None);
    }

    #[test]
    fn reports_this_machine() {
        let status = device_status();
        assert!(status["uptimeSeconds"].as_f64().is_some_and(|s| s > 0.0), "{status}");
        assert_eq!(status["loadAverage"].as_array().map(Vec::len), Some(3), "{status}");
        assert!(status["memory"]["totalBytes"].as_u64().is_some_and(|b| b > 0), "{status}");
        assert!(status["rootFilesystem"]["totalBytes"].as_u64().is_some_and(|b| b > 0), "{status}");
        let info = system_info();
        assert_eq!(info["arch"], std::env::consts::ARCH);
        assert!(info["kernel"].as_str().is_some_and(|k| !k.is_empty()), "{info}");
        assert_eq!(info["hostname"].as_str(), hostname().as_deref());
    }
}
