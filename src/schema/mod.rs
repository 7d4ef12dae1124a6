//! Schema tools: measure the stored schema, plan a better one, migrate data into it,
//! keep it in shape with retention policies and downsampling (`schema bench`, which compares the modes, is in `crate::bench::schema`).

pub mod analyze;
pub mod backfill;
pub mod influxql;
pub mod migrate;
pub mod plan;
pub mod retention;

/// The progress bar of a chunked, resumable run (migrate, backfill): one style, hidden when `show` is off.
pub(crate) fn chunk_progress(show: bool, total_chunks: i64, done: u64) -> indicatif::ProgressBar {
    let bar = if show {
        indicatif::ProgressBar::new(total_chunks.max(0) as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} chunks, {msg} [{elapsed} elapsed, ETA {eta}]",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_position(done);
    bar
}
