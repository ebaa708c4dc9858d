//! Figures of the benches' results, as PNG files people would rather look
//! at than read: one line per variant (a proxy and its mode), the number
//! of Services on a logarithmic x axis.
//!
//! This crate owns:
//! * [`results`]: the long CSV format the scale benches write (`env,
//!   variant, services, round, metric, value`, a capped point written as
//!   `cap`) and the medians over rounds drawn from it;
//! * [`figure`]: a [`figure::Figure`] drawn with `plotters` (bitmap backend,
//!   text through `ab_glyph` from a TTF file read at run time, so no
//!   fontconfig or freetype), capped points drawn at the cap with their
//!   own marker and legend entry;
//! * [`timeline`]: panels of lines over time (the rebalancing bench's
//!   requests per real server around a scale-up) and the reading of its
//!   CSV.

pub mod figure;
pub mod results;
pub mod timeline;

pub use figure::{Figure, PlotError, Series, default_font, render};
pub use results::{Median, ResultsError, Row, Table};
