//! The one progress facility of the command line (`-p`): qemu-img's line, `    (12.34/100%)`,
//! redrawn in place on stderr, hidden when stderr is not a terminal and with `-q`.
//!
//! A [`Progress`] is cheap to clone and may be updated from several threads (the parallel
//! copies of `convert`): the shown figure is the fraction of the work done, in hundredths of
//! a percent, as qemu-img prints it.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// The scale of the bar: hundredths of a percent.
const SCALE: u64 = 10_000;

/// A progress line, or nothing when progress is off.
#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Progress on stderr when `requested` (`-p`) and not `quiet` (`-q`); hidden anyway when
    /// stderr is not a terminal.
    pub fn new(requested: bool, quiet: bool) -> Progress {
        Progress::with_target(requested && !quiet, ProgressDrawTarget::stderr())
    }

    /// Progress drawn on `target` when `enabled`.
    fn with_target(enabled: bool, target: ProgressDrawTarget) -> Progress {
        if !enabled {
            return Progress { bar: None };
        }
        let style = ProgressStyle::with_template("    ({qpct}/100%)").expect("a valid template").with_key(
            "qpct",
            |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.2}", s.pos() as f64 / 100.0);
            },
        );
        let bar = ProgressBar::with_draw_target(Some(SCALE), target).with_style(style);
        bar.set_position(0);
        Progress { bar: Some(bar) }
    }

    /// `done` of `total` units of work are done.
    pub fn set(&self, done: u64, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(fraction(done, total));
        }
    }

    /// The work is done: the line shows 100% and stays.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
            // The next output starts on a line of its own (qemu-img ends its line too).
            if !bar.is_hidden() {
                eprintln!();
            }
        }
    }

    /// The figure shown, in hundredths of a percent (None when off).
    #[cfg(test)]
    fn shown(&self) -> Option<u64> {
        self.bar.as_ref().map(|b| b.position())
    }
}

/// `done / total` in hundredths of a percent (all done when there is nothing to do).
fn fraction(done: u64, total: u64) -> u64 {
    if total == 0 || done >= total {
        return SCALE;
    }
    (done as u128 * SCALE as u128 / total as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A terminal that records what is drawn.
    #[derive(Debug, Default, Clone)]
    struct Screen(Arc<Mutex<String>>);

    impl indicatif::TermLike for Screen {
        fn width(&self) -> u16 {
            80
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
            self.0.lock().unwrap().push_str(&format!("{s}\n"));
            Ok(())
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().push_str(s);
            Ok(())
        }
        fn clear_line(&self) -> std::io::Result<()> {
            self.0.lock().unwrap().push('\r');
            Ok(())
        }
        fn flush(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_line_is_qemu_imgs_and_reaches_100() {
        let screen = Screen::default();
        let p = Progress::with_target(true, ProgressDrawTarget::term_like(Box::new(screen.clone())));
        p.set(1234, 10_000);
        assert_eq!(p.shown(), Some(1234));
        p.set(3, 3);
        p.finish();
        assert_eq!(p.shown(), Some(SCALE));
        let text = screen.0.lock().unwrap().clone();
        assert!(text.contains("    (100.00/100%)"), "{text:?}");
    }

    #[test]
    fn fractions_are_hundredths_of_a_percent() {
        assert_eq!(fraction(0, 10), 0);
        assert_eq!(fraction(1, 3), 3333);
        assert_eq!(fraction(10, 10), SCALE);
        assert_eq!(fraction(0, 0), SCALE);
        assert_eq!(fraction(u64::MAX, u64::MAX), SCALE);
        assert_eq!(fraction(u64::MAX / 2, u64::MAX), 4999);
    }

    #[test]
    fn off_and_quiet_show_nothing() {
        assert_eq!(Progress::new(false, false).shown(), None);
        assert_eq!(Progress::new(true, true).shown(), None);
    }
}
