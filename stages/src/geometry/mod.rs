//! Geometries of weight space: which flow a model is and the manifold it lives on.
//!
//! The main type is [`Geometry`] (Euclidean, Normalized, Geometric; docs/science.md §5.1). The
//! sphere operations are in [`sphere`], the product manifold of canonical networks in
//! [`product`], and the differentiable canonicalization of predictions in [`canon`].

pub mod canon;
pub mod product;
pub mod sphere;

use serde::{Deserialize, Serialize};

/// The three flows of the thesis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Geometry {
    /// Raw weights, straight paths, plain MSE.
    Euclidean,
    /// Canonical data and predictions, straight (chordal) paths, plain MSE.
    Normalized,
    /// Canonical data and predictions, geodesic paths, geodesic loss, manifold steps.
    Geometric,
}

crate::words!(Geometry, "geometry", { Euclidean = "euclidean", Normalized = "normalized", Geometric = "geometric" });

impl Geometry {
    /// Whether source, target and predictions are canonicalized (points on the spheres).
    pub fn is_canonical(self) -> bool {
        !matches!(self, Geometry::Euclidean)
    }

    /// Whether paths, loss and sampling steps follow the spheres.
    pub fn is_riemannian(self) -> bool {
        matches!(self, Geometry::Geometric)
    }
}
