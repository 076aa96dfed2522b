//! Turning events into output: live bars on a terminal, plain lines elsewhere, JSON lines
//! with `--log-format json`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::event::{Event, EventSink};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Bars,
    Plain,
    Json,
    Quiet,
}

impl Mode {
    pub fn choose(quiet: bool, json: bool) -> Mode {
        if json {
            Mode::Json
        } else if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Plain
        }
    }
}

pub struct Renderer {
    mode: Mode,
    multi: MultiProgress,
    overall: Option<ProgressBar>,
    bars: HashMap<String, ProgressBar>,
    started: HashMap<String, Instant>,
    done: usize,
    to_run: usize,
}

impl Renderer {
    pub fn new(mode: Mode) -> Renderer {
        let multi = MultiProgress::with_draw_target(if mode == Mode::Bars {
            ProgressDrawTarget::stderr_with_hz(8)
        } else {
            ProgressDrawTarget::hidden()
        });
        Renderer { mode, multi, overall: None, bars: HashMap::new(), started: HashMap::new(), done: 0, to_run: 0 }
    }

    fn line(&self, text: String) {
        match self.mode {
            Mode::Bars => {
                let _ = self.multi.println(text);
            }
            Mode::Plain => eprintln!("{text}"),
            Mode::Json | Mode::Quiet => {}
        }
    }

    fn json(&self, mut value: serde_json::Value) {
        if self.mode == Mode::Json {
            value["time"] = serde_json::Value::String(now_rfc3339());
            eprintln!("{value}");
        }
    }
}

/// The current UTC time as RFC 3339 with milliseconds, e.g. `2026-12-03T16:30:01.123Z`.
fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:03}Z", crate::ops::report::utc(now.as_secs() as f64).replace(' ', "T"), now.subsec_millis())
}

impl EventSink for Renderer {
    fn event(&mut self, event: Event) {
        match &event {
            Event::Planned { total, cached, to_run } => {
                self.to_run = *to_run;
                self.json(serde_json::json!({"event": "planned", "total": total, "cached": cached, "to_run": to_run}));
                self.line(format!("{total} instances: {cached} cached, {to_run} to run"));
                if self.mode == Mode::Bars && *to_run > 0 {
                    let bar = self.multi.add(ProgressBar::new(*to_run as u64));
                    bar.set_style(
                        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} instances, {elapsed} elapsed, ETA {eta}")
                            .expect("template")
                            .progress_chars("=> "),
                    );
                    bar.set_prefix("overall");
                    self.overall = Some(bar);
                }
            }
            Event::Queued { instance, job } => {
                self.json(serde_json::json!({"event": "queued", "instance": instance, "job": job}));
                self.line(format!("  queued   {instance} (job {job})"));
            }
            Event::Started { instance, key, gpus } => {
                self.started.insert(instance.clone(), Instant::now());
                self.json(serde_json::json!({"event": "started", "instance": instance, "key": key, "gpus": gpus}));
                if self.mode == Mode::Plain {
                    self.line(format!("  start    {instance}"));
                }
                if self.mode == Mode::Bars {
                    let bar = self.multi.add(ProgressBar::new(0));
                    bar.set_style(
                        ProgressStyle::with_template("{spinner} {msg:50!} [{bar:20}] {pos}/{len} {per_sec} ETA {eta}")
                            .expect("template")
                            .progress_chars("=> "),
                    );
                    bar.set_message(instance.clone());
                    bar.enable_steady_tick(std::time::Duration::from_millis(250));
                    self.bars.insert(instance.clone(), bar);
                }
            }
            Event::Progress { instance, step, total, unit } => {
                self.json(serde_json::json!({"event": "progress", "instance": instance, "step": step, "total": total, "unit": unit}));
                if let Some(bar) = self.bars.get(instance) {
                    bar.set_length(*total);
                    bar.set_position(*step);
                }
            }
            Event::Metric { instance, name, value } => {
                self.json(serde_json::json!({"event": "metric", "instance": instance, "name": name, "value": value}));
                if let Some(bar) = self.bars.get(instance) {
                    bar.set_message(format!("{instance} {name}={value:.4}"));
                }
            }
            Event::Finished { instance, seconds, by_other } => {
                self.done += 1;
                if let Some(bar) = self.bars.remove(instance) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                if let Some(o) = &self.overall {
                    o.inc(1);
                }
                self.json(serde_json::json!({"event": "finished", "instance": instance, "seconds": seconds, "by_other": by_other}));
                let how = if *by_other { " (computed by another run)" } else { "" };
                self.line(format!("  done     {instance} in {seconds:.1}s{how} [{}/{}]", self.done, self.to_run));
            }
            Event::Failed { instance, message, log, code } => {
                if let Some(bar) = self.bars.remove(instance) {
                    bar.finish_and_clear();
                    self.multi.remove(&bar);
                }
                self.json(serde_json::json!({"event": "failed", "instance": instance, "message": message, "log": log, "code": code}));
                self.line(format!("  FAILED   {instance}: {message}\n           log: {}", log.display()));
            }
            Event::Skipped { instance, because } => {
                self.json(serde_json::json!({"event": "skipped", "instance": instance, "because": because}));
                self.line(format!("  skipped  {instance} (because {because} failed)"));
            }
        }
    }

    fn finish(&mut self) {
        for (_, bar) in self.bars.drain() {
            bar.finish_and_clear();
        }
        if let Some(o) = self.overall.take() {
            o.finish_and_clear();
        }
    }
}
