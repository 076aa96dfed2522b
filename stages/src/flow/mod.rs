//! Flow matching over weights (docs/science.md §5): paths, losses, batch sources, the explicit
//! training loop and its checkpoints.
//!
//! The main type is [`FlowSpec`], everything that defines a trained flow (geometry,
//! coupling, layout, network config, time channel, kept pairs, σ, source set); it is written next to
//! the model as `flow.json`, and [`train::train`] produces the model for it.

pub mod adam;
pub mod checkpoint;
pub mod ema;
pub mod estimate;
pub mod export;
pub mod loss;
pub mod path;
pub mod source;
pub mod state_bytes;
pub mod train;

use serde::{Deserialize, Serialize};

use crate::coupling::Coupling;
use crate::flow::estimate::{Estimator, Output};
use crate::geometry::Geometry;
use crate::layout::Layout;
use crate::rt::graph::{GraphSpec, Positions, TimeChannel};
use crate::rt::{model::RtConfig, pairs::Attention};

/// How the x0 batches are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceMode {
    /// A finite set of prior draws, pre-drawn once (faithful).
    Fixed,
    /// Fresh prior draws for every batch.
    Fresh,
}

crate::words!(SourceMode, "source", { Fixed = "fixed", Fresh = "fresh" });

/// The prior `N(0, std²·I_P)` (canonicalized for the sphere geometries).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceSpec {
    pub mode: SourceMode,
    pub std: f64,
    /// Size of the fixed set (= the target set size; 0 for fresh draws).
    pub count: usize,
    /// Seed of the fixed set, so a sampler can redraw exactly the same set.
    pub seed: u64,
}

/// Everything that defines a trained flow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowSpec {
    pub geometry: Geometry,
    pub coupling: Coupling,
    /// The layout the flow was trained on.
    pub layout: Layout,
    pub rt: RtConfig,
    pub time_channel: TimeChannel,
    pub sigma: f64,
    pub source: SourceSpec,
    /// What the network's output stands for; absent in `flow.json` for the thesis's
    /// reading, so flows trained before the option existed read back unchanged.
    #[serde(default, skip_serializing_if = "Output::is_target")]
    pub output: Output,
    /// Which node pairs the network keeps; absent in `flow.json` for the thesis's dense
    /// model, so earlier flows read back unchanged.
    #[serde(default, skip_serializing_if = "Attention::is_dense")]
    pub attention: Attention,
    /// Which positional row each node reads; absent in `flow.json` for the thesis's
    /// shared hidden rows, so earlier flows read back unchanged.
    #[serde(default, skip_serializing_if = "Positions::is_shared")]
    pub positions: Positions,
}

/// What `flow.json` holds: the flow and how it was trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainedFlow {
    pub spec: FlowSpec,
    pub settings: train::TrainSettings,
    /// Whether the training targets were permutation-aligned.
    pub target_aligned: bool,
    /// The rows the training targets were trained on (absent in flows trained before it
    /// was recorded, and for the toy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets_trained_on: Option<crate::data::TrainingSplit>,
}

impl FlowSpec {
    /// How this flow's outputs become estimates of `x1` for networks of `layout` (the
    /// training layout, or another hidden width when sampling).
    pub fn estimator(&self, layout: &Layout) -> Estimator {
        Estimator { output: self.output, canonical: self.geometry.is_canonical(), layout: layout.clone() }
    }

    /// The graph this flow's network runs on for networks of `layout`.
    pub fn graph(&self, layout: &Layout) -> GraphSpec {
        GraphSpec::new(layout, self.time_channel, self.attention).with_positions(self.positions)
    }

    /// Why this flow's network cannot run on networks of `layout`, if it cannot.
    pub fn incompatibility(&self, layout: &Layout) -> Option<String> {
        self.rt.incompatibility(layout, self.positions)
    }
}

/// A training failure.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("loss became {value} at iteration {iteration}; last finite loss {last_finite}")]
    NonFiniteLoss { iteration: usize, value: f64, last_finite: String },
    #[error("diverged: loss {value:.3e} at iteration {iteration} is more than {ratio:e} x the first step's {first:.3e}; lower `lr` (the last checkpoint is kept)")]
    Diverged { iteration: usize, value: f64, first: f64, ratio: f64 },
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: std::path::PathBuf, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}
