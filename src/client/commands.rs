//! What `goclaw node` answers to a `node.invoke.request`: `device.status`,
//! `system.info`, `echo`, `system.which` at once; `system.run` and the
//! `--exec` programs on a thread each (at most [`MAX_RUNNING`] at once), so a
//! slow program never delays pongs or other answers; and the
//! `node.invoke.result` that carries each answer back (OPENCLAW.md §6.1,
//! §7). Reads the params as real gateways send them (`paramsJSON`, else
//! `params`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc::Sender;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use log::debug;
use serde_json::{Value, json};

use crate::client::exec::{Answer, Exec, run_program};
use crate::client::{run, sysinfo};
use crate::wire::params::{MAX_ERROR_MESSAGE_BYTES, MAX_INVOKE_TIMEOUT_MS};

/// The commands every node answers, besides its `--exec` programs.
pub const BUILT_IN: &[&str] = &["device.status", "echo", "system.info", "system.run", "system.which"];
/// Programs (`system.run`, `--exec`) running at once; more get `BUSY`.
pub const MAX_RUNNING: usize = 4;

/// What the commands need from the agent's configuration.
#[derive(Debug, Clone)]
pub struct Runner {
    /// The `--exec` programs.
    pub execs: Vec<Exec>,
    /// Longest a program may run.
    pub exec_timeout: Duration,
    /// The agent's `PATH`, for `system.which` and `system.run`.
    pub path: Option<String>,
}

/// A finished program's answer, for the request it answers.
pub type Finished = (Value, Answer);

/// Programs running now, and where their answers go.
pub struct Running {
    /// Their threads (joined when the connection ends).
    pub threads: Vec<JoinHandle<()>>,
    count: Arc<AtomicUsize>,
    done: Sender<Finished>,
}

impl Running {
    /// No program running; answers will go to `done`.
    pub fn new(done: Sender<Finished>) -> Running {
        Running { threads: Vec::new(), count: Arc::new(AtomicUsize::new(0)), done }
    }
}

impl Runner {
    /// Answers a request at once, or starts a program on its own thread
    /// (its answer comes through `running`'s channel) and returns `None`.
    pub fn answer(&self, request: &Value, running: &mut Running) -> Option<Answer> {
        let command = request["command"].as_str().unwrap_or_default();
        debug!(command = command, invoke_id = request["id"].as_str().unwrap_or_default(); "invoke request");
        // The params as the gateway sends them: `paramsJSON` (OpenClaw), else `params`.
        let text = match (request["paramsJSON"].as_str(), request.get("params")) {
            (Some(text), _) => text.to_string(),
            (None, Some(params)) => params.to_string(),
            (None, None) => "null".to_string(),
        };
        let parsed =
            || serde_json::from_str::<Value>(&text).map_err(|_| ("INVALID_REQUEST", "paramsJSON is not JSON".into()));
        match command {
            "device.status" => return Some(Ok(sysinfo::device_status().to_string())),
            "system.info" => return Some(Ok(sysinfo::system_info().to_string())),
            "echo" => return Some(Ok(text)),
            "system.which" => return Some(parsed().and_then(|params| run::which(&params, self.path.as_deref()))),
            _ => {}
        }
        let invoke_timeout = Duration::from_millis(request["timeoutMs"].as_u64().unwrap_or(MAX_INVOKE_TIMEOUT_MS));
        let timeout = self.exec_timeout.min(invoke_timeout);
        let job: Box<dyn FnOnce() -> Answer + Send> = if command == "system.run" {
            let params = match parsed() {
                Ok(params) => params,
                Err(e) => return Some(Err(e)),
            };
            let (execs, path) = (self.execs.clone(), self.path.clone());
            Box::new(move || run::run(&params, &execs, path.as_deref(), timeout))
        } else if let Some(exec) = self.execs.iter().find(|e| e.name == command) {
            let exec = exec.clone();
            Box::new(move || run_program(&exec, &text, timeout))
        } else {
            return Some(Err(("UNAVAILABLE", "command not supported".into())));
        };
        if running.count.fetch_add(1, SeqCst) >= MAX_RUNNING {
            running.count.fetch_sub(1, SeqCst);
            return Some(Err(("BUSY", format!("{MAX_RUNNING} programs are already running; try again"))));
        }
        let (request, done, count) = (request.clone(), running.done.clone(), running.count.clone());
        let spawned = thread::Builder::new().name(format!("run {command}")).spawn(move || {
            let outcome = job();
            count.fetch_sub(1, SeqCst);
            let _ = done.send((request, outcome));
        });
        match spawned {
            Ok(handle) => {
                running.threads.push(handle);
                None
            }
            Err(e) => {
                running.count.fetch_sub(1, SeqCst);
                Some(Err(("EXEC_FAILED", format!("cannot start a thread: {e}"))))
            }
        }
    }
}

/// The `node.invoke.result` request for an answer: `id` and `nodeId` as
/// the request had them, then `payloadJSON` or `error{code,message}`.
pub fn result_frame(n: u64, request: &Value, outcome: Answer) -> Value {
    let mut params = json!({"id": request["id"], "nodeId": request["nodeId"]});
    match outcome {
        Ok(payload) => {
            params["ok"] = json!(true);
            params["payloadJSON"] = json!(payload);
        }
        Err((code, message)) => {
            params["ok"] = json!(false);
            let message = &message[..message.floor_char_boundary(MAX_ERROR_MESSAGE_BYTES / 2)];
            params["error"] = json!({"code": code, "message": message});
        }
    }
    json!({"type": "req", "id": format!("result-{n}"), "method": "node.invoke.result", "params": params})
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn runner() -> Runner {
        Runner { execs: Vec::new(), exec_timeout: Duration::from_secs(5), path: Some("/usr/bin:/bin".into()) }
    }

    #[test]
    fn built_ins_answer_at_once_from_params_json() {
        let (done, _finished) = mpsc::channel();
        let mut running = Running::new(done);
        let request =
            |command: &str, params: &str| json!({"id": "i1", "nodeId": "n", "command": command, "paramsJSON": params});
        let r = runner();
        assert_eq!(r.answer(&request("echo", r#"{"a":1}"#), &mut running), Some(Ok(r#"{"a":1}"#.into())));
        let which = r.answer(&request("system.which", r#"{"bins":["sh"]}"#), &mut running).unwrap().unwrap();
        assert!(which.contains("\"sh\":\""), "{which}");
        // `params` when there is no `paramsJSON` (goclaw's older gateways).
        let old = json!({"id": "i2", "nodeId": "n", "command": "echo", "params": {"b": 2}});
        assert_eq!(r.answer(&old, &mut running), Some(Ok(r#"{"b":2}"#.into())));
        let unknown = r.answer(&request("camera.snap", "{}"), &mut running);
        assert_eq!(unknown, Some(Err(("UNAVAILABLE", "command not supported".into()))));
        assert_eq!(r.answer(&request("system.run", "{no"), &mut running).unwrap().unwrap_err().0, "INVALID_REQUEST");
    }

    #[test]
    fn system_run_answers_through_the_channel() {
        let (done, finished) = mpsc::channel();
        let mut running = Running::new(done);
        let request =
            json!({"id": "i1", "nodeId": "n", "command": "system.run", "paramsJSON": r#"{"command":["ls"]}"#});
        assert_eq!(runner().answer(&request, &mut running), None);
        let (answered, outcome) = finished.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(answered["id"], "i1");
        assert_eq!(outcome.unwrap_err().0, "UNAVAILABLE");
        for handle in running.threads {
            handle.join().unwrap();
        }
    }

    #[test]
    fn results_echo_the_request_ids() {
        let request = json!({"id": "inv-1", "nodeId": "faf6", "command": "echo"});
        let ok = result_frame(1, &request, Ok("{}".into()));
        assert_eq!(ok["params"], json!({"id": "inv-1", "nodeId": "faf6", "ok": true, "payloadJSON": "{}"}));
        let err = result_frame(2, &request, Err(("UNAVAILABLE", "x".repeat(10_000))));
        assert_eq!(err["params"]["error"]["code"], "UNAVAILABLE");
        assert!(err["params"]["error"]["message"].as_str().unwrap().len() <= MAX_ERROR_MESSAGE_BYTES / 2);
        assert_eq!((err["method"].clone(), err["id"].clone()), (json!("node.invoke.result"), json!("result-2")));
    }
}
