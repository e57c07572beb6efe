//! Progress of remote work, for the progress bar a verb shows on a terminal.
//!
//! The verbs hand the backend a chunk of up to 2,048 devices at a time; on the local backend a
//! chunk takes milliseconds, on Azure minutes (a Key Vault import, a delivery, an enrollment
//! page per request, paced by the services' rate limits). So the azure backend reports each
//! unit of remote work as it completes (a certificate imported, a device delivered to, a page
//! of enrollments or identities written) to a process-wide [`Sink`] that the CLI installs for
//! the length of a verb. Nothing is reported when no sink is installed (`-q`, `-o json`, a
//! stderr that is not a terminal, the library used on its own).
//!
//! A [`Stage`] is one batch of remote work: it begins with its total, advances as items
//! complete (from any thread or task: the sink is `Sync`), and ends when dropped.

use std::sync::{Arc, RwLock};

/// Where remote progress goes (the CLI's bar; a recorder in tests).
pub trait Sink: Send + Sync {
    /// A batch of `total` items of remote work named `what` (`Key Vault imports`) begins.
    fn begin(&self, what: &str, total: u64);
    /// `n` more items of the current batch are done.
    fn advance(&self, n: u64);
    /// The current batch has ended (done or failed).
    fn end(&self);
}

static SINK: RwLock<Option<Arc<dyn Sink>>> = RwLock::new(None);

/// Keeps a sink installed; dropping it removes the sink.
#[must_use = "the sink is removed when this is dropped"]
pub struct Installed(());

impl Drop for Installed {
    fn drop(&mut self) {
        if let Ok(mut slot) = SINK.write() {
            *slot = None;
        }
    }
}

/// Sends remote progress to `sink` until the returned guard is dropped.
pub fn install(sink: Arc<dyn Sink>) -> Installed {
    if let Ok(mut slot) = SINK.write() {
        *slot = Some(sink);
    }
    Installed(())
}

/// One batch of remote work (see the module docs).
pub struct Stage {
    sink: Option<Arc<dyn Sink>>,
}

/// Begins a batch of `total` items named `what`; a no-op without an installed sink or for an
/// empty batch.
pub fn stage(what: &str, total: u64) -> Stage {
    let sink = if total == 0 {
        None
    } else {
        SINK.read().ok().and_then(|s| s.clone())
    };
    if let Some(sink) = &sink {
        sink.begin(what, total);
    }
    Stage { sink }
}

impl Stage {
    /// `n` more items are done.
    pub fn advance(&self, n: u64) {
        if let Some(sink) = &self.sink {
            sink.advance(n);
        }
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if let Some(sink) = &self.sink {
            sink.end();
        }
    }
}

/// A [`Sink`] over an indicatif bar: the current batch's name, count and rate.
pub struct BarSink(pub indicatif::ProgressBar);

impl BarSink {
    /// A bar for remote work on `target` (stderr for the CLI, a hidden or in-memory target in
    /// tests).
    pub fn new(target: indicatif::ProgressDrawTarget) -> BarSink {
        let bar = indicatif::ProgressBar::with_draw_target(Some(0), target);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} {pos}/{len} [{bar:30}] {per_sec}")
                .expect("static template")
                .progress_chars("=> "),
        );
        BarSink(bar)
    }
}

impl Sink for BarSink {
    fn begin(&self, what: &str, total: u64) {
        self.0.reset();
        self.0.set_length(total);
        self.0.set_message(what.to_string());
    }
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
    fn end(&self) {}
}

impl Drop for BarSink {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records what a sink is told, for tests.
    #[derive(Default)]
    pub(crate) struct Recorder(pub Mutex<Vec<String>>);

    impl Sink for Recorder {
        fn begin(&self, what: &str, total: u64) {
            self.0.lock().unwrap().push(format!("begin {what} {total}"));
        }
        fn advance(&self, n: u64) {
            self.0.lock().unwrap().push(format!("+{n}"));
        }
        fn end(&self) {
            self.0.lock().unwrap().push("end".into());
        }
    }

    /// Tests that install the process-wide sink run one at a time.
    pub(crate) static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn a_stage_reports_to_the_installed_sink_and_nothing_without_one() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let recorder = Arc::new(Recorder::default());
        {
            let _installed = install(recorder.clone());
            let stage = stage("Key Vault imports", 3);
            std::thread::scope(|s| {
                s.spawn(|| stage.advance(1));
                s.spawn(|| stage.advance(2));
            });
            drop(stage);
            drop(super::stage("nothing", 0));
        }
        stage("after", 5).advance(5);
        let mut seen = recorder.0.lock().unwrap().clone();
        seen[1..3].sort();
        assert_eq!(seen, ["begin Key Vault imports 3", "+1", "+2", "end"]);
    }

    #[test]
    fn the_bar_shows_the_batch_and_advances_with_it() {
        let bar = BarSink::new(indicatif::ProgressDrawTarget::hidden());
        bar.begin("deliveries", 1000);
        bar.advance(1);
        bar.advance(2);
        assert_eq!((bar.0.position(), bar.0.length()), (3, Some(1000)));
        assert_eq!(bar.0.message(), "deliveries");
        bar.begin("DPS enrollment pages", 4);
        assert_eq!((bar.0.position(), bar.0.length()), (0, Some(4)));
    }
}
