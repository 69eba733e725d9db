//! Reading tokenjar's Prometheus text (`GET /metrics`) in tests.

/// The sum of every sample of metric `name` whose labels include all of
/// `labels` (pairs of name and value); 0 when there is none, since counters
/// without a sample yet have counted nothing.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let wanted = metric == name
                && labels.iter().all(|(key, val)| {
                    label_text
                        .split(',')
                        .any(|pair| pair == format!("{key}=\"{val}\""))
                });
            wanted.then(|| value.parse::<f64>().ok()).flatten()
        })
        // Not `sum()`: an empty float sum is -0, which reads oddly in messages.
        .fold(0.0, |total, value| total + value)
}

#[cfg(test)]
mod tests {
    use super::metric_sum;

    #[test]
    fn sums_matching_samples() {
        let text = "# TYPE tokenjar_requests_total counter\n\
                    tokenjar_requests_total{route=\"api\",status=\"200\"} 3\n\
                    tokenjar_requests_total{route=\"api\",status=\"502\"} 1\n\
                    tokenjar_requests_total{route=\"apix\",status=\"200\"} 7\n\
                    tokenjar_csrf_refused_total 2\n";
        assert_eq!(
            metric_sum(text, "tokenjar_requests_total", &[("route", "api")]),
            4.0
        );
        assert_eq!(
            metric_sum(
                text,
                "tokenjar_requests_total",
                &[("route", "api"), ("status", "200")]
            ),
            3.0
        );
        assert_eq!(metric_sum(text, "tokenjar_csrf_refused_total", &[]), 2.0);
        assert_eq!(metric_sum(text, "tokenjar_logouts_total", &[]), 0.0);
    }
}
