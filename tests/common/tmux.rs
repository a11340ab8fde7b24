//! A tmux server of the test's own (its own socket), for driving the real binary in a real
//! terminal: send-keys in, capture-pane out. Killed on drop. Included with
//! `#[path = "common/tmux.rs"] mod tmux;` by the test binaries that use a terminal.

use std::process::Command;
use std::time::{Duration, Instant};

pub struct TmuxServer {
    socket: String,
}

impl TmuxServer {
    pub fn new(name: &str) -> TmuxServer {
        TmuxServer {
            socket: format!("cutover-test-{}-{name}", std::process::id()),
        }
    }

    pub fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("tmux: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What the pane `target` (e.g. `main:drive`) shows.
    pub fn screen(&self, target: &str) -> String {
        self.tmux(&["capture-pane", "-p", "-t", target])
    }

    pub fn wait_for(&self, target: &str, needle: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen(target);
            if screen.contains(needle) {
                return screen;
            }
            if start.elapsed() > limit {
                panic!("{target} never showed {needle:?}; it shows:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn keys(&self, target: &str, keys: &[&str]) {
        for key in keys {
            self.tmux(&["send-keys", "-t", target, key]);
            std::thread::sleep(Duration::from_millis(60));
        }
    }

    /// Types `text` literally.
    #[allow(dead_code)] // not every terminal test types text
    pub fn text(&self, target: &str, text: &str) {
        self.tmux(&["send-keys", "-t", target, "-l", text]);
        std::thread::sleep(Duration::from_millis(250));
    }
}

impl Drop for TmuxServer {
    fn drop(&mut self) {
        self.tmux(&["kill-server"]);
    }
}
