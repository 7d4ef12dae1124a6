//! `schema bench` at a tiny size: every layout gets the same data, so every
//! dashboard query gives the same answer in each — rows and values, including
//! the answers computed from the downsampling tiers, which must equal the ones
//! computed from raw points.
//!
//! Timings are not asserted here (they belong to the benchmark itself, see
//! `docs/BENCHMARKS.md`); only that the comparison compares like with like.

use ha_ingestor::bench::schema::{BenchOptions, QUERIES, render_text, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_layout_answers_every_query_the_same_tiers_included() {
    let opts = BenchOptions {
        entities: 24,
        days: 2,
        runs: 1,
        seed: 11,
        influxd: None,
    };
    let r = run(&opts).await.expect("schema bench runs");
    assert_eq!(r.modes.len(), 3);
    let (ha, opt, tiers) = (&r.modes[0], &r.modes[1], &r.modes[2]);
    assert_eq!(
        (ha.mode.as_str(), opt.mode.as_str(), tiers.mode.as_str()),
        ("homeassistant", "optimized", "optimized + tiers")
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
        assert_eq!(
            q.homeassistant.rows, q.optimized_tiers.rows,
            "{}: {} vs {}",
            q.name, q.homeassistant.query, q.optimized_tiers.query
        );
        assert!(
            q.equal && q.equal_tiers,
            "{}: {:?}\n{}\n{}\n{}",
            q.name,
            q.difference,
            q.homeassistant.query,
            q.optimized.query,
            q.optimized_tiers.query
        );
    }
    // The floor: HA's answer stored as plain points reads back row for row
    // (the top-10 stores every entity's counts, of which the report ranks ten).
    for (i, q) in r.queries.iter().enumerate() {
        if i == 5 {
            assert!(q.stored_answer.rows >= q.homeassistant.rows, "{}", q.name);
        } else {
            assert_eq!(q.stored_answer.rows, q.homeassistant.rows, "{}", q.name);
        }
        assert!(
            q.stored_answer.query.contains("\"answers\""),
            "{}",
            q.stored_answer.query
        );
        assert!(q.bound > 0.0, "{}", q.name);
    }
    // The aggregate queries over a day or more read a tier, the others raw points.
    let tiers_read: Vec<&str> = r.queries.iter().map(|q| q.tier.as_str()).collect();
    assert_eq!(
        tiers_read,
        [
            "raw",
            "ds_5m_365d",
            "ds_5m_365d",
            "raw",
            "ds_1h_inf",
            "ds_1h_inf"
        ]
    );
    for q in r.queries.iter().filter(|q| q.tier != "raw") {
        assert!(
            q.optimized_tiers.query.contains(&q.tier),
            "{}",
            q.optimized_tiers.query
        );
    }
    // Values read: the same raw values in both layouts for the single-sensor means,
    // fewer from a tier for the 30-day aggregates.
    for q in &r.queries[1..] {
        let (Some(h), Some(o), Some(t)) = (
            q.homeassistant.values_read,
            q.optimized.values_read,
            q.optimized_tiers.values_read,
        ) else {
            panic!("{}: values read missing", q.name);
        };
        assert!(h > 0 && o > 0 && t > 0, "{}", q.name);
        if q.tier != "raw" && q.name.contains("30 d") {
            assert!(t < o, "{}: {t} from the tier vs {o} raw", q.name);
        }
    }
    assert_eq!(
        r.queries[1].homeassistant.values_read,
        r.queries[1].optimized.values_read
    );
    // The backfill wrote the tiers, and they cost disk and series of their own.
    assert_eq!(r.backfill.chunks, u64::from(opts.days));
    assert!(r.backfill.points > 0);
    assert_eq!(tiers.points, opt.points + r.backfill.points);
    assert!(tiers.series > opt.series && tiers.disk_bytes > 0);
    assert!(r.backfill.tier_disk_bytes.iter().all(|(_, n)| *n > 0));
    assert!(r.all_equal());
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
