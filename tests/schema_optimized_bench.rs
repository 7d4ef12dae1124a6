//! `schema bench` at a tiny size: both modes get the same data, so every dashboard query returns as many rows in each.
//!
//! Timings are not asserted here (they belong to the benchmark itself, see
//! `docs/BENCHMARKS.md`); only that the comparison compares like with like.

use ha_ingestor::schema::bench::{BenchOptions, QUERIES, render_text, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_modes_answer_every_query_with_the_same_rows() {
    let opts = BenchOptions {
        entities: 24,
        days: 2,
        runs: 1,
        seed: 11,
        influxd: None,
    };
    let r = run(&opts).await.expect("schema bench runs");
    assert_eq!(r.modes.len(), 2);
    let (ha, opt) = (&r.modes[0], &r.modes[1]);
    assert_eq!(
        (ha.mode.as_str(), opt.mode.as_str()),
        ("homeassistant", "optimized")
    );
    assert!(
        r.events > 1_000,
        "a real history was generated: {}",
        r.events
    );
    assert_eq!(ha.points, opt.points, "same points in both modes");
    assert_eq!(
        ha.points, r.events,
        "every generated state change is one point"
    );
    assert_eq!(r.queries.len(), QUERIES.len());
    for q in &r.queries {
        assert!(
            q.homeassistant.rows > 0,
            "{} returned nothing: {}",
            q.name,
            q.homeassistant.query
        );
        assert_eq!(
            q.homeassistant.rows, q.optimized.rows,
            "{}: {} vs {}",
            q.name, q.homeassistant.query, q.optimized.query
        );
    }
    // Same entities, so the same series; the optimized layout has far fewer measurements and field keys.
    assert_eq!(ha.series, opt.series);
    assert!(
        opt.measurements < ha.measurements,
        "{} vs {}",
        opt.measurements,
        ha.measurements
    );
    assert!(
        opt.field_keys < ha.field_keys,
        "{} vs {}",
        opt.field_keys,
        ha.field_keys
    );
    assert!(ha.disk_bytes > 0 && opt.disk_bytes > 0);
    let text = render_text(&r);
    for name in QUERIES {
        assert!(text.contains(name), "{name} missing from the text report");
    }
}
