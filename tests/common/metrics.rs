//! Reading Prometheus text: a sample by name and labels. A metric that should exist is asserted
//! to exist: a missing one is never read as 0.

/// The value of the sample `name{labels…}` (labels in any order; others may be present), or
/// `None` when there is no such sample.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric_name, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if metric_name != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| label_values(rest).any(|(lk, lv)| lk == *k && lv == *v));
            all.then(|| value.parse().ok()).flatten()
        })
}

/// As `metric`, but a missing sample fails the test, showing the whole exposition.
pub fn metric_or_panic(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(text, name, labels)
        .unwrap_or_else(|| panic!("no sample {name} {labels:?} in the metrics:\n{text}"))
}

/// `k="v"` pairs of a label set (values without escapes, as veer's labels are).
fn label_values(set: &str) -> impl Iterator<Item = (&str, &str)> {
    set.split("\",").filter_map(|pair| {
        let (k, v) = pair.split_once("=\"")?;
        Some((k.trim_start_matches(',').trim(), v.trim_end_matches('"')))
    })
}
