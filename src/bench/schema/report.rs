//! The report as text: one table of the queries, one of the modes, the backfill's figures.

use super::BenchReport;

/// The report as a Markdown-friendly text table.
pub fn render_text(r: &BenchReport) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "schema bench: {} entities x {} days, seed {}, {} state changes, median of {} runs after a warm-up\n",
        r.entities, r.days, r.seed, r.events, r.runs
    );
    let _ = writeln!(
        s,
        "| query | tier read | homeassistant ms | optimized raw ms | optimized + tiers ms | stored answer ms | speedup raw | speedup tiers | bound | rows (ha / raw / tiers) | values read (ha / raw / tiers) | same answer |"
    );
    let _ = writeln!(
        s,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|"
    );
    for q in &r.queries {
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2}x | {:.2}x | {:.2}x | {} / {} / {} | {} | {} |",
            q.name,
            q.tier,
            q.homeassistant.median_ms,
            q.optimized.median_ms,
            q.optimized_tiers.median_ms,
            q.stored_answer.median_ms,
            q.speedup,
            q.speedup_tiers,
            q.bound,
            q.homeassistant.rows,
            q.optimized.rows,
            q.optimized_tiers.rows,
            [&q.homeassistant, &q.optimized, &q.optimized_tiers]
                .map(|r| r.values_read.map_or("–".to_string(), |n| n.to_string()))
                .join(" / "),
            match (q.equal, q.equal_tiers) {
                (true, true) => "yes".to_string(),
                _ => format!("NO: {}", q.difference.as_deref().unwrap_or("")),
            }
        );
    }
    let _ = writeln!(
        s,
        "\nmedian speedup: optimized raw {:.2}x, optimized + tiers {:.2}x; total time speedup: {:.2}x, {:.2}x\n\
         bound (HA's time over reading its answer stored ready-made): median {:.2}x\n",
        r.median_speedup,
        r.median_speedup_tiers,
        r.total_speedup,
        r.total_speedup_tiers,
        r.median_bound
    );
    let _ = writeln!(
        s,
        "| mode | points | line bytes | load s | series | series x fields | measurements | field keys | disk bytes |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for m in &r.modes {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1} | {} | {} | {} | {} | {} |",
            m.mode,
            m.points,
            m.line_bytes,
            m.load_seconds,
            m.series,
            m.field_series,
            m.measurements,
            m.field_keys,
            m.disk_bytes
        );
    }
    let b = &r.backfill;
    let _ = writeln!(
        s,
        "\ntiers backfill: {:.1} s wall, {} influxd CPU s, {} chunks, {} tier points; tier disk: {}",
        b.seconds,
        b.influxd_cpu_seconds
            .map_or("?".to_string(), |c| format!("{c:.1}")),
        b.chunks,
        b.points,
        b.tier_disk_bytes
            .iter()
            .map(|(rp, n)| format!("{rp} {n} bytes"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    s
}
