//! Line charts as SVG, drawn on the server: no script, no chart library, nothing fetched.
//! Each line carries its series' name and total (`data-series`, `data-total`), which
//! assistive tools and tests can read.

use std::fmt::Write as _;

use super::view::escape;

pub(crate) struct Series {
    pub name: String,
    pub values: Vec<f64>,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 180.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 22.0;

/// The smallest of 1, 2, 5 times a power of ten that is at least `v` (1 for nothing).
fn nice_ceiling(v: f64) -> f64 {
    if !v.is_finite() || v <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * power).find(|c| *c >= v).unwrap_or(10.0 * power)
}

fn number(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// A chart of `series` over the steps whose labels are `x_labels` (one per value; the first,
/// middle and last are printed). `unit` follows the numbers of the y axis.
pub(crate) fn line_chart(title: &str, series: &[Series], x_labels: &[String], unit: &str) -> String {
    let steps = x_labels.len().max(1);
    let top = nice_ceiling(series.iter().flat_map(|s| s.values.iter().copied()).fold(0.0, f64::max));
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |i: usize| LEFT + if steps > 1 { plot_w * i as f64 / (steps - 1) as f64 } else { plot_w / 2.0 };
    let y = |v: f64| TOP + plot_h * (1.0 - v / top);
    let title = escape(title);
    let mut svg = format!(
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{title}"><title>{title}</title>"#
    );
    for fraction in [0.0, 0.5, 1.0] {
        let value = top * fraction;
        let at = y(value);
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{LEFT}" x2="{}" y1="{at:.1}" y2="{at:.1}"/><text class="axis" x="{}" y="{:.1}" text-anchor="end">{} {}</text>"#,
            WIDTH - RIGHT,
            LEFT - 6.0,
            at + 4.0,
            number(value),
            escape(unit),
        );
    }
    let ticks = if steps > 2 { vec![0, steps / 2, steps - 1] } else { (0..steps).collect() };
    for (n, i) in ticks.into_iter().enumerate() {
        let anchor = match n {
            0 => "start",
            1 if steps > 2 => "middle",
            _ => "end",
        };
        let label = x_labels.get(i).map(|l| escape(l)).unwrap_or_default();
        let _ = write!(
            svg,
            r#"<text class="axis" x="{:.1}" y="{}" text-anchor="{anchor}">{label}</text>"#,
            x(i),
            HEIGHT - 6.0
        );
    }
    for (n, s) in series.iter().enumerate() {
        let points: Vec<String> =
            s.values.iter().enumerate().map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v))).collect();
        let total: f64 = s.values.iter().sum();
        let _ = write!(
            svg,
            r#"<polyline class="line s{}" data-series="{}" data-total="{}" points="{}"><title>{}: {}</title></polyline>"#,
            n % 6,
            escape(&s.name),
            number(total),
            points.join(" "),
            escape(&s.name),
            number(total),
        );
        // A lone point would not show as a line: mark every non-zero value.
        for (i, v) in s.values.iter().enumerate().filter(|(_, v)| **v > 0.0) {
            let _ = write!(svg, r#"<circle class="dot s{}" cx="{:.1}" cy="{:.1}" r="2.5"/>"#, n % 6, x(i), y(*v));
        }
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_tops_are_round_numbers() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(1.0), 1.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(11.0), 20.0);
        assert_eq!(nice_ceiling(5001.0), 10000.0);
    }

    #[test]
    fn a_chart_draws_each_series_and_escapes_names() {
        let series = [
            Series { name: "embed <a>".into(), values: vec![0.0, 4.0, 0.0] },
            Series { name: "other".into(), values: vec![1.0, 1.0, 1.0] },
        ];
        let labels: Vec<String> = ["10:00", "10:01", "10:02"].iter().map(|s| s.to_string()).collect();
        let svg = line_chart("Requests", &series, &labels, "");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains(r#"data-series="embed &lt;a&gt;" data-total="4""#));
        assert!(svg.contains(r#"data-series="other" data-total="3""#));
        assert_eq!(svg.matches("<circle").count(), 4, "one dot per non-zero value");
        // The peak (4) sits on the top grid line (the axis tops out at 5).
        assert!(svg.contains(">5 </text>"));
        assert!(svg.contains(">10:01</text>"));
    }
}
