//! The crash test: a child process (this test binary, re-run on one ignored
//! test) approves devices in a burst and prints each approval once
//! `approve` has returned; it is killed with SIGKILL at a random moment,
//! [`KILLS`] times. After each kill the store must open (no torn file) and
//! hold every approval the child printed, on this run and the earlier ones.

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::tests::scratch;
use super::*;
use crate::wire::device::{device_id, encode_public_key};

/// Where the child finds its store; set only for the child.
const STORE_VAR: &str = "GOCLAW_PAIRING_CRASH_STORE";
/// How many times the child is killed.
const KILLS: usize = 30;
/// A new store every this many kills, so the file stays small and writes fast.
const KILLS_PER_STORE: usize = 10;
/// The child stops approving at this many devices (under MAX_PAIRED_DEVICES).
const CHILD_MAX_DEVICES: usize = 3000;
/// The child's test, as the harness names it.
const CHILD_TEST: &str = "gateway::pairing::crash_test::crash_child";

fn random_u32() -> u32 {
    getrandom::u32().expect("the OS random source works")
}

#[test]
#[ignore = "the child of crash_keeps_every_printed_approval; does nothing on its own"]
fn crash_child() {
    let Ok(path) = std::env::var(STORE_VAR) else { return };
    let store = Store::open(&path).expect("the child opens the store");
    loop {
        if store.snapshot().paired().count() >= CHILD_MAX_DEVICES {
            thread::sleep(Duration::from_millis(100));
            continue;
        }
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).expect("the OS random source works");
        let device = DeviceInfo {
            device_id: device_id(&raw),
            public_key: encode_public_key(&raw),
            display_name: "crash test".into(),
            platform: "linux".into(),
            version: "1".into(),
            client_id: "node-host".into(),
            client_mode: "node".into(),
            device_family: String::new(),
        };
        let now = crate::util::unix_ms();
        let new = NewRequest {
            device,
            role: Role::Node,
            scopes: Vec::new(),
            caps: Vec::new(),
            commands: vec!["system.run".into()],
            source_ip: IpAddr::from(random_u32().to_be_bytes()),
        };
        let request = store.request(new, now).expect("request").request;
        let approved = store.approve(&request.request_id, now).expect("approve");
        if raw[0] % 2 == 0 {
            store.issue_token(&approved.device.device.device_id, Role::Node, now).expect("token");
        }
        println!("approved {} {}", request.request_id, approved.device.device.device_id);
    }
}

#[test]
fn crash_keeps_every_printed_approval() {
    let exe = std::env::current_exe().unwrap();
    let mut path = scratch("crash");
    let mut printed: Vec<(String, String)> = Vec::new();
    let (mut approvals, mut checks, mut mid_write) = (0, 0, 0);
    for kill_no in 0..KILLS {
        if kill_no % KILLS_PER_STORE == 0 {
            path = scratch(&format!("crash-{kill_no}"));
            printed.clear();
        }
        let mut child = Command::new(&exe)
            .args(["--exact", CHILD_TEST, "--ignored", "--nocapture", "--test-threads=1", "-q"])
            .env(STORE_VAR, path.as_os_str())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = thread::spawn(move || {
            let lines = BufReader::new(stdout).lines().map_while(Result::ok);
            lines.filter(|l| l.starts_with("approved ")).collect::<Vec<_>>()
        });
        thread::sleep(Duration::from_millis(u64::from(20 + random_u32() % 980)));
        kill(Pid::from_raw(i32::try_from(child.id()).unwrap()), Signal::SIGKILL).unwrap();
        child.wait().unwrap();
        for line in reader.join().unwrap() {
            let mut words = line.split(' ').skip(1).map(str::to_owned);
            let (Some(request_id), Some(device_id), None) = (words.next(), words.next(), words.next()) else {
                panic!("a torn line: {line:?}")
            };
            printed.push((request_id, device_id));
            approvals += 1;
        }
        // A temp file left behind: the kill landed inside a write.
        mid_write += usize::from(file::temp_path(&path).exists());
        let store = Store::open(&path).unwrap_or_else(|e| panic!("after kill {kill_no}: {e}"));
        assert!(!file::temp_path(&path).exists());
        let snap = store.snapshot();
        let now = crate::util::unix_ms();
        for (request_id, device_id) in &printed {
            assert!(snap.approved(device_id, Role::Node).is_some(), "kill {kill_no}: {device_id} lost");
            assert!(snap.pending_request(request_id, now).is_none(), "kill {kill_no}: {request_id} pending");
        }
        checks += printed.len();
    }
    eprintln!(
        "pairing crash test: {KILLS} kills, {mid_write} inside a write, {approvals} approvals printed, \
         {checks} checks after kills"
    );
    assert!(approvals > 0, "the child never got to approve anything");
}
