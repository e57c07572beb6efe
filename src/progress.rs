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
//! complete (from any thread or task: the sink is `Sync`), and ends when dropped. A stage whose
//! items the client paces ([`paced_stage`]) takes its time left from that rate once the rate
//! measured exceeds it: a burst the pacer lets through at the start says nothing of the rest.
//!
//! A bar is drawn only once it has a batch (a name and a total above zero): never `0/0`, never
//! without its name.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Where remote progress goes (the CLI's bar; a recorder in tests).
pub trait Sink: Send + Sync {
    /// A batch of `total` items of remote work named `what` (`Key Vault imports`) begins.
    fn begin(&self, what: &str, total: u64);
    /// `n` more items of the current batch are done.
    fn advance(&self, n: u64);
    /// The current batch has ended (done or failed).
    fn end(&self);
    /// The items of the batch about to begin go no faster than `per_sec` (the client paces
    /// them; 0: not paced): its time left is counted at most at that rate. Told before each
    /// [`begin`](Self::begin).
    fn pace(&self, _per_sec: f64) {}
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
    begin_stage(what, total, 0.0)
}

/// [`stage`] of items the client paces at `per_sec` (after a burst): the time left is counted
/// at that rate whenever the rate measured is higher.
pub fn paced_stage(what: &str, total: u64, per_sec: f64) -> Stage {
    begin_stage(what, total, per_sec)
}

fn begin_stage(what: &str, total: u64, per_sec: f64) -> Stage {
    let sink = if total == 0 {
        None
    } else {
        SINK.read().ok().and_then(|s| s.clone())
    };
    if let Some(sink) = &sink {
        sink.pace(if per_sec.is_finite() && per_sec > 0.0 {
            per_sec
        } else {
            0.0
        });
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

/// A rate as a bar shows it: at most one decimal (`2.0/s`, `150/s`, `<0.1/s`), not indicatif's
/// four (`2.0075/s`).
pub fn rate_text(per_sec: f64) -> String {
    if !per_sec.is_finite() || per_sec <= 0.0 {
        "0/s".to_string()
    } else if per_sec < 0.05 {
        "<0.1/s".to_string()
    } else if per_sec < 10.0 {
        format!("{per_sec:.1}/s")
    } else {
        format!("{per_sec:.0}/s")
    }
}

/// The time left for `left` items at the rate measured, or at `cap` (items a second the client
/// paces them at) when that is slower or nothing is measured yet; `?` when no rate is known.
pub fn eta_text(left: u64, measured: f64, cap: Option<f64>) -> String {
    if left == 0 {
        return "0s".to_string();
    }
    let measured = Some(measured).filter(|r| r.is_finite() && *r > 0.0);
    let rate = match (measured, cap.filter(|c| c.is_finite() && *c > 0.0)) {
        (Some(m), Some(c)) => m.min(c),
        (Some(r), None) | (None, Some(r)) => r,
        (None, None) => return "?".to_string(),
    };
    // A year at most: a rate near zero must not overflow the duration.
    let secs = (left as f64 / rate).min(365.0 * 86_400.0);
    format!(
        "{:#}",
        indicatif::HumanDuration(std::time::Duration::from_secs_f64(secs))
    )
}

/// `template` with the rate and time left drawn by [`rate_text`] and [`eta_text`]; `cap` holds
/// the pace of the current batch (`f64` bits, 0: none), `name` its name (`{msg}`: kept here, so
/// that a new batch's name, count and total are drawn together, never a mix of two batches).
fn style(template: &str, cap: Arc<AtomicU64>, name: Arc<Mutex<String>>) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(template)
        .expect("static template")
        .progress_chars("=> ")
        .with_key(
            "msg",
            move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&name.lock().unwrap_or_else(|p| p.into_inner()));
            },
        )
        .with_key(
            "per_sec",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&rate_text(state.per_sec()));
            },
        )
        .with_key(
            "eta",
            move |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let left = state.len().unwrap_or(0).saturating_sub(state.pos());
                let cap = f64::from_bits(cap.load(Ordering::Relaxed));
                let _ = w.write_str(&eta_text(left, state.per_sec(), Some(cap)));
            },
        )
}

/// The bar of a verb's device loop (`devices N/TOTAL`). The loop moves it a chunk of up to 2,048
/// devices at a time: on the local backend many times a second, on azure once a chunk's remote
/// work is done, minutes later, while the stage bars below it move with each item. So on azure
/// it is `deferred`: drawn only once it has moved, never as a `devices 0/1001 ... 0/s eta 0s`
/// that stays so for a whole chunk (a run of one chunk shows the stage bars alone). Without a
/// [`indicatif::MultiProgress`] (no terminal, `-q`, `-o json`) nothing is drawn.
pub struct DeviceBar {
    bar: indicatif::ProgressBar,
    multi: Option<indicatif::MultiProgress>,
    drawn: AtomicBool,
}

impl DeviceBar {
    /// A device bar drawn in `multi` (above the bars added later), at once or, `deferred`, once
    /// it has moved.
    pub fn new(multi: Option<&indicatif::MultiProgress>, deferred: bool) -> DeviceBar {
        let bar = indicatif::ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::hidden());
        bar.set_style(style(DEVICE_TEMPLATE, Arc::default(), Arc::default()));
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
            drawn: AtomicBool::new(shown),
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
            && !self.drawn.swap(true, Ordering::Relaxed)
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
        self.drawn.load(Ordering::Relaxed)
    }

    /// The devices done and the devices in all.
    pub fn position(&self) -> (u64, Option<u64>) {
        (self.bar.position(), self.bar.length())
    }
}

/// Where a [`BarSink`]'s bar is drawn once it has a batch.
pub enum Place {
    /// On its own target (stderr for the CLI).
    Target(indicatif::ProgressDrawTarget),
    /// Below the bars of a `MultiProgress`.
    Multi(indicatif::MultiProgress),
}

/// A [`Sink`] over an indicatif bar: the current batch's name, count, rate and time left. The
/// bar stays hidden until the first batch begins, so it never shows without a name or at `0/0`.
pub struct BarSink {
    bar: indicatif::ProgressBar,
    /// Where the bar goes at the first batch; None once it is there.
    place: Mutex<Option<Place>>,
    /// The current batch's pace (`f64` bits; 0: none).
    cap: Arc<AtomicU64>,
    /// The current batch's name.
    name: Arc<Mutex<String>>,
}

impl BarSink {
    /// A bar for remote work, drawn at `place` from the first batch on (stderr or a
    /// `MultiProgress` for the CLI, an in-memory terminal in tests).
    pub fn new(place: Place) -> BarSink {
        let (cap, name): (Arc<AtomicU64>, Arc<Mutex<String>>) = Default::default();
        let bar = indicatif::ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::hidden());
        bar.set_style(style(STAGE_TEMPLATE, cap.clone(), name.clone()));
        BarSink {
            bar,
            place: Mutex::new(Some(place)),
            cap,
            name,
        }
    }

    /// The bar.
    pub fn bar(&self) -> &indicatif::ProgressBar {
        &self.bar
    }

    /// The current batch's name.
    pub fn name(&self) -> String {
        self.name.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Sink for BarSink {
    fn begin(&self, what: &str, total: u64) {
        *self.name.lock().unwrap_or_else(|p| p.into_inner()) = what.to_string();
        self.bar.reset_elapsed();
        // Count and total in one update: one drawn state, the new batch's.
        self.bar.update(|state| {
            state.set_pos(0);
            state.set_len(total);
        });
        let place = self.place.lock().unwrap_or_else(|p| p.into_inner()).take();
        match place {
            Some(Place::Target(target)) => self.bar.set_draw_target(target),
            Some(Place::Multi(multi)) => {
                multi.add(self.bar.clone());
            }
            None => {}
        }
        // A draw of the update above may have been held back by the rate limit.
        self.bar.force_draw();
    }
    fn advance(&self, n: u64) {
        self.bar.inc(n);
    }
    fn end(&self) {}
    fn pace(&self, per_sec: f64) {
        self.cap.store(per_sec.to_bits(), Ordering::Relaxed);
    }
}

impl Drop for BarSink {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
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
        let stage = BarSink::new(Place::Multi(multi.clone()));
        stage.begin("Key Vault imports", 1000);
        stage.advance(500);
        stage.bar().tick();
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
        stage.bar().tick();
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
        let bar = BarSink::new(Place::Target(indicatif::ProgressDrawTarget::hidden()));
        bar.begin("deliveries", 1000);
        bar.advance(1);
        bar.advance(2);
        assert_eq!((bar.bar().position(), bar.bar().length()), (3, Some(1000)));
        assert_eq!(bar.name(), "deliveries");
        bar.begin("DPS enrollment pages", 4);
        assert_eq!((bar.bar().position(), bar.bar().length()), (0, Some(4)));
    }

    /// Third trial of issue 12: `0/0 [=====] 0/s eta 0s` and `0/1 [ ] 0/s eta 0s` flashed
    /// before the first batch was named. Nothing is drawn before a batch begins, and what is
    /// drawn from then on carries the batch's name.
    #[test]
    fn no_bar_is_drawn_before_its_batch_nor_without_its_name() {
        let (term, multi) = screen();
        let sink = BarSink::new(Place::Multi(multi.clone()));
        sink.bar().tick();
        assert_eq!(term.drawn(), "", "nothing before the first batch");
        drop(stage("nothing", 0));
        sink.begin("Key Vault imports", 1);
        let drawn = term.drawn();
        assert!(drawn.contains("Key Vault imports 0/1"), "{drawn}");
        sink.advance(1);
        sink.bar().force_draw();
        sink.begin("deliveries", 3);
        sink.advance(1);
        sink.bar().force_draw();
        let drawn = term.drawn();
        assert!(drawn.contains("deliveries 1/3"), "{drawn}");
        // No frame mixes the two batches (the new name at the old count, or the other way).
        for mixed in ["deliveries 0/1", "deliveries 1/1", "Key Vault imports 0/3"] {
            assert!(!drawn.contains(mixed), "{mixed} in\n{drawn}");
        }
        for line in drawn.lines().filter(|l| l.contains('[')) {
            assert!(
                line.contains("Key Vault imports") || line.contains("deliveries"),
                "a bar without its name: {line:?} in\n{drawn}"
            );
            assert!(!line.contains(" 0/0 "), "{drawn}");
        }
    }

    /// The imports of the trial: a burst the client lets through at once (~100/s), then its
    /// pace of 2/s. At 14 of 300 the time left is the 286 left at 2/s, not at the burst's rate
    /// (`eta 3s`); a rate the service holds below the pace counts as measured.
    #[test]
    fn the_time_left_of_a_paced_batch_is_counted_at_the_pace_once_faster() {
        assert_eq!(eta_text(286, 100.0, Some(2.0)), eta_text(286, 2.0, None));
        assert_eq!(eta_text(286, 100.0, Some(2.0)), "2m");
        assert_eq!(eta_text(100, 1.0, Some(2.0)), "2m", "the service's slower rate");
        assert_eq!(
            eta_text(10, 0.0, Some(2.0)),
            "5s",
            "nothing measured yet: the pace"
        );
        assert_eq!(eta_text(10, 0.0, None), "?", "no rate known");
        assert_eq!(eta_text(10, 5.0, None), "2s");
        assert_eq!(eta_text(0, 0.0, None), "0s");
        assert_eq!(
            eta_text(5, 1e-300, None),
            eta_text(5, 1e-300, None),
            "no overflow"
        );

        // Drawn: the batch paced at 2/s shows minutes left right after a fast start.
        let (term, multi) = screen();
        let sink = Arc::new(BarSink::new(Place::Multi(multi.clone())));
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let _installed = install(sink.clone());
        let st = paced_stage("Key Vault imports", 300, 2.0);
        st.advance(14);
        sink.bar().force_draw();
        let drawn = term.drawn();
        let last = drawn.lines().rfind(|l| l.contains("14/300")).unwrap_or_default();
        assert!(last.contains("eta 2m"), "{drawn}");
    }

    #[test]
    fn rates_show_at_most_one_decimal() {
        assert_eq!(rate_text(2.0075), "2.0/s");
        assert_eq!(rate_text(0.9907), "1.0/s");
        assert_eq!(rate_text(3.3482), "3.3/s");
        assert_eq!(rate_text(150.3), "150/s");
        assert_eq!(rate_text(0.01), "<0.1/s");
        assert_eq!(rate_text(0.0), "0/s");
        assert_eq!(rate_text(f64::NAN), "0/s");
    }
}
