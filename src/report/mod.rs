//! Aggregation and presentation: gathered rows become grouped summary tables, figures
//! and the report folder, beside the thesis's own numbers.
//!
//! [`gather`] reads the rows of every input instance, [`near`] marks rows near a baseline,
//! [`aggregate`] groups and summarises them, [`summary_table`] lays a summary out as a table, [`reference`] holds the thesis's
//! numbers, [`figure_data`] and [`draw`] make figures. The `table` and `figure` kinds (`crate::kinds`) and `wfpipe report`
//! (`crate::ops::report`) are built from these, and [`html`] turns a report's markdown into
//! its `index.html`.

pub mod aggregate;
pub mod draw;
pub mod figure_data;
pub mod gather;
pub mod html;
pub mod near;
pub mod reference;
pub mod summary_table;
