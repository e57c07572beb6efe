//! Fuzzes the plan parser and validator (`plan::parse`) on arbitrary text. The input is the plan,
//! then optionally a NUL byte and the contents of the device list `ids.txt` beside it, so that
//! `devices = { file = "ids.txt" }` reads fuzzed bytes too. Any result is fine; a panic, a hang
//! or an error without the plan's path is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir").keep())
}

fuzz_target!(|data: &[u8]| {
    let (plan, ids) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(text) = std::str::from_utf8(plan) else {
        return;
    };
    let dir = dir();
    std::fs::write(dir.join("ids.txt"), ids).expect("write ids.txt");
    let path = dir.join("certroll.toml");
    if let Err(e) = certroll::plan::parse(&path, text) {
        let shown = e.to_string();
        assert!(
            e.path.starts_with(dir),
            "an error names a file outside the plan's folder: {shown}"
        );
        if let (Some(line), Some(column)) = (e.line, e.column) {
            assert!(line >= 1 && column >= 1, "0-based location: {shown}");
        }
    }
});
