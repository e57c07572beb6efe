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

/// How a stage's bar is drawn: its name, count, rate and the time left at that rate.
pub const STAGE_TEMPLATE: &str = "{spinner} {msg} {pos}/{len} [{bar:30}] {per_sec} eta {eta}";

/// How the device bar of a verb is drawn.
pub const DEVICE_TEMPLATE: &str = "{spinner} devices {pos}/{len} [{bar:40}] {per_sec} eta {eta}";

/// The bar of a verb's device loop (`devices N/TOTAL`). The loop moves it a chunk of up to 2,048
/// devices at a time: on the local backend many times a second, on azure once a chunk's remote
/// work is done, minutes later, while the stage bars below it move with each item. So on azure
/// it is `deferred`: drawn only once it has moved, never as a `devices 0/1001 ... 0/s eta 0s`
/// that stays so for a whole chunk (a run of one chunk shows the stage bars alone). Without a
/// [`indicatif::MultiProgress`] (no terminal, `-q`, `-o json`) nothing is drawn.
pub struct DeviceBar {
    bar: indicatif::ProgressBar,
    multi: Option<indicatif::MultiProgress>,
    drawn: std::sync::atomic::AtomicBool,
}

impl DeviceBar {
    /// A device bar drawn in `multi` (above the bars added later), at once or, `deferred`, once
    /// it has moved.
    pub fn new(multi: Option<&indicatif::MultiProgress>, deferred: bool) -> DeviceBar {
        let bar = indicatif::ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::hidden());
        bar.set_style(
            indicatif::ProgressStyle::with_template(DEVICE_TEMPLATE)
                .expect("static template")
                .progress_chars("=> "),
        );
        let shown = match multi {
            Some(m) if !deferred => {
                m.insert(0, bar.clone());
                true
            }
            _ => false,
        };
        DeviceBar {
            bar,
            multi: multi.cloned(),
            drawn: std::sync::atomic::AtomicBool::new(shown),
        }
    }

    /// The number of devices the loop will look at.
    pub fn start(&self, total: u64) {
        self.bar.set_length(total);
    }

    /// `n` more devices are done.
    pub fn advance(&self, n: u64) {
        self.bar.inc(n);
        if self.bar.position() > 0
            && let Some(multi) = &self.multi
            && !self.drawn.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            multi.insert(0, self.bar.clone());
        }
    }

    /// The loop has ended: the bar goes.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    /// Whether the bar is drawn (in its `MultiProgress`).
    pub fn is_drawn(&self) -> bool {
        self.drawn.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The devices done and the devices in all.
    pub fn position(&self) -> (u64, Option<u64>) {
        (self.bar.position(), self.bar.length())
    }
}

/// A [`Sink`] over an indicatif bar: the current batch's name, count, rate and time left.
pub struct BarSink(pub indicatif::ProgressBar);

impl BarSink {
    /// A bar for remote work on `target` (stderr for the CLI, a hidden or in-memory target in
    /// tests).
    pub fn new(target: indicatif::ProgressDrawTarget) -> BarSink {
        let bar = indicatif::ProgressBar::with_draw_target(Some(0), target);
        bar.set_style(
            indicatif::ProgressStyle::with_template(STAGE_TEMPLATE)
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

    /// A terminal that keeps everything drawn on it, in order.
    #[derive(Debug, Clone, Default)]
    struct Screen(Arc<Mutex<String>>);

    impl Screen {
        fn drawn(&self) -> String {
            self.0.lock().unwrap().clone()
        }
    }

    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            160
        }
        fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            let mut all = self.0.lock().unwrap();
            all.push_str(s);
            all.push('\n');
            Ok(())
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().push_str(s);
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn screen() -> (Screen, indicatif::MultiProgress) {
        let term = Screen::default();
        let multi = indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::term_like(
            Box::new(term.clone()),
        ));
        (term, multi)
    }

    #[test]
    fn a_deferred_device_bar_is_drawn_only_once_it_has_moved_and_stage_bars_show_the_time_left() {
        let (term, multi) = screen();
        let devices = DeviceBar::new(Some(&multi), true);
        devices.start(1001);
        let stage = BarSink::new(indicatif::ProgressDrawTarget::hidden());
        multi.add(stage.0.clone());
        stage.begin("Key Vault imports", 1000);
        stage.advance(500);
        stage.0.tick();
        let drawn = term.drawn();
        assert!(!devices.is_drawn());
        assert!(
            !drawn.contains("devices"),
            "a device count that has not moved is not drawn:\n{drawn}"
        );
        assert!(drawn.contains("Key Vault imports 500/1000"), "{drawn}");
        assert!(
            drawn.contains(" eta "),
            "the stage bar shows the time left:\n{drawn}"
        );

        devices.advance(0);
        assert!(!devices.is_drawn());
        devices.advance(1001);
        devices.bar.tick();
        stage.0.tick();
        assert!(devices.is_drawn());
        assert_eq!(devices.position(), (1001, Some(1001)));
        let drawn = term.drawn();
        assert!(!drawn.contains("devices 0/"), "{drawn}");
        let (top, below) = (drawn.rfind("devices 1001/1001"), drawn.rfind("Key Vault imports"));
        assert!(
            top.is_some() && top < below,
            "the device bar is drawn above the stage bar:\n{drawn}"
        );
    }

    #[test]
    fn a_device_bar_not_deferred_is_drawn_from_the_start_and_none_without_a_terminal() {
        let (term, multi) = screen();
        let devices = DeviceBar::new(Some(&multi), false);
        devices.start(10);
        devices.bar.tick();
        assert!(devices.is_drawn());
        assert!(term.drawn().contains("devices 0/10"), "{}", term.drawn());
        let nowhere = DeviceBar::new(None, false);
        nowhere.start(10);
        nowhere.advance(10);
        assert!(!nowhere.is_drawn());
        assert_eq!(nowhere.position(), (10, Some(10)));
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
