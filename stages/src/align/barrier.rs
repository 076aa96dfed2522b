//! Loss barriers.
