//! Just enough SVG for the report's charts: linear scales with round ticks, a framed plot area
//! with labelled axes, and escaping. No scripts, no external resources.

use std::fmt::Write;

/// Escapes text for HTML and SVG content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A step of 1, 2 or 5 times a power of ten giving about `n` intervals over `span`.
pub fn nice_step(span: f64, n: usize) -> f64 {
    let raw = (span / n.max(1) as f64).max(f64::MIN_POSITIVE);
    let mag = 10f64.powf(raw.log10().floor());
    let m = raw / mag;
    let nice = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Decimals that show a tick step exactly (0.25 -> 2, 5 -> 0).
pub fn decimals(step: f64) -> usize {
    let mut d = 0;
    while d < 6 && ((step * 10f64.powi(d as i32)).round() - step * 10f64.powi(d as i32)).abs() > 1e-6 {
        d += 1;
    }
    d
}

/// An axis: a data interval widened to round tick values, mapped onto a pixel interval.
#[derive(Debug, Clone)]
pub struct Axis {
    pub lo: f64,
    pub hi: f64,
    pub step: f64,
    px_lo: f64,
    px_hi: f64,
}

impl Axis {
    /// Covers `[min, max]` with about `ticks` round intervals; a single value gets a unit-ish span.
    pub fn covering(min: f64, max: f64, ticks: usize, px_lo: f64, px_hi: f64) -> Axis {
        let (mut min, mut max) = if min.is_finite() && max.is_finite() { (min, max) } else { (0.0, 1.0) };
        if max - min < 1e-12 {
            let pad = if min.abs() > 1e-12 { min.abs() * 0.1 } else { 1.0 };
            min -= pad;
            max += pad;
        }
        let step = nice_step(max - min, ticks);
        let lo = (min / step).floor() * step;
        let hi = (max / step).ceil() * step;
        Axis { lo, hi, step, px_lo, px_hi }
    }

    /// Like [`Axis::covering`] but with whole-number ticks (controller steps, counts).
    pub fn covering_integers(min: f64, max: f64, ticks: usize, px_lo: f64, px_hi: f64) -> Axis {
        let mut a = Axis::covering(min, max.max(min + 1.0), ticks, px_lo, px_hi);
        if a.step < 1.0 {
            a.step = 1.0;
            a.lo = a.lo.floor();
            a.hi = a.hi.ceil();
        }
        a
    }

    pub fn px(&self, v: f64) -> f64 {
        self.px_lo + (v - self.lo) / (self.hi - self.lo) * (self.px_hi - self.px_lo)
    }

    pub fn ticks(&self) -> Vec<f64> {
        let n = ((self.hi - self.lo) / self.step).round() as i64;
        (0..=n).map(|i| self.lo + i as f64 * self.step).collect()
    }

    pub fn label(&self, v: f64) -> String {
        format!("{v:.*}", decimals(self.step))
    }
}

/// A chart: SVG size, the plot area inside its margins, and both axes.
pub struct Chart {
    pub width: f64,
    pub height: f64,
    pub x: Axis,
    pub y: Axis,
}

pub const MARGIN_LEFT: f64 = 64.0;
pub const MARGIN_RIGHT: f64 = 24.0;
pub const MARGIN_TOP: f64 = 16.0;
pub const MARGIN_BOTTOM: f64 = 48.0;

impl Chart {
    /// Axes over the data ranges `x` and `y`; `integer` (x, y) asks for whole-number ticks
    /// (controller steps, counts).
    pub fn new(width: f64, height: f64, x: (f64, f64), y: (f64, f64), integer: (bool, bool)) -> Chart {
        let (left, right) = (MARGIN_LEFT, width - MARGIN_RIGHT);
        let (top, bottom) = (MARGIN_TOP, height - MARGIN_BOTTOM);
        let xa = if integer.0 {
            Axis::covering_integers(x.0, x.1, 10, left, right)
        } else {
            Axis::covering(x.0, x.1, 8, left, right)
        };
        let ya = if integer.1 {
            Axis::covering_integers(y.0, y.1, 6, bottom, top)
        } else {
            Axis::covering(y.0, y.1, 6, bottom, top)
        };
        Chart { width, height, x: xa, y: ya }
    }

    /// `<svg>` opening tag, grid, ticks, axis labels. The caller appends marks and `</svg>`.
    pub fn open(&self, class: &str, title: &str, x_label: &str, y_label: &str) -> String {
        let (w, h) = (self.width, self.height);
        let (left, right, top, bottom) = (MARGIN_LEFT, w - MARGIN_RIGHT, MARGIN_TOP, h - MARGIN_BOTTOM);
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" class="{}" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="{}">"#,
            esc(class),
            esc(title)
        );
        let _ = write!(s, "<title>{}</title>", esc(title));
        s.push_str(r#"<g class="grid">"#);
        for v in self.x.ticks() {
            let x = self.x.px(v);
            let _ = write!(s, r#"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}"/>"#);
        }
        for v in self.y.ticks() {
            let y = self.y.px(v);
            let _ = write!(s, r#"<line x1="{left}" y1="{y:.1}" x2="{right}" y2="{y:.1}"/>"#);
        }
        s.push_str("</g>");
        s.push_str(r#"<g class="axis">"#);
        let _ =
            write!(s, r#"<rect x="{left}" y="{top}" width="{}" height="{}" fill="none"/>"#, right - left, bottom - top);
        for v in self.x.ticks() {
            let x = self.x.px(v);
            let _ = write!(
                s,
                r#"<line x1="{x:.1}" y1="{bottom}" x2="{x:.1}" y2="{}"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
                bottom + 5.0,
                bottom + 18.0,
                self.x.label(v)
            );
        }
        for v in self.y.ticks() {
            let y = self.y.px(v);
            let _ = write!(
                s,
                r#"<line x1="{}" y1="{y:.1}" x2="{left}" y2="{y:.1}"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
                left - 5.0,
                left - 8.0,
                y + 4.0,
                self.y.label(v)
            );
        }
        let _ = write!(
            s,
            r#"<text class="label" x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            (left + right) / 2.0,
            h - 8.0,
            esc(x_label)
        );
        let (cx, cy) = (16.0, (top + bottom) / 2.0);
        let _ = write!(
            s,
            r#"<text class="label" x="{cx}" y="{cy:.1}" text-anchor="middle" transform="rotate(-90 {cx} {cy:.1})">{}</text>"#,
            esc(y_label)
        );
        s.push_str("</g>");
        s
    }

    /// Pixel position of a data point.
    pub fn point(&self, x: f64, y: f64) -> (f64, f64) {
        (self.x.px(x), self.y.px(y))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_steps_and_their_decimals() {
        assert_eq!(nice_step(100.0, 10), 10.0);
        assert_eq!(nice_step(7.0, 8), 1.0);
        assert_eq!(nice_step(0.3, 6), 0.05);
        assert_eq!(decimals(0.05), 2);
        assert_eq!(decimals(20.0), 0);
        assert_eq!(decimals(2.5), 1);
    }

    #[test]
    fn axes_cover_the_data_with_round_ends() {
        let a = Axis::covering(13.2, 47.9, 8, 0.0, 100.0);
        assert!(a.lo <= 13.2 && a.hi >= 47.9, "{a:?}");
        assert_eq!(a.ticks().first().copied(), Some(a.lo));
        assert!((a.px(a.lo) - 0.0).abs() < 1e-9 && (a.px(a.hi) - 100.0).abs() < 1e-9);
        let one = Axis::covering(5.0, 5.0, 8, 0.0, 100.0);
        assert!(one.lo < 5.0 && one.hi > 5.0, "{one:?}");
        let steps = Axis::covering_integers(0.0, 3.0, 10, 0.0, 100.0);
        assert!(steps.ticks().iter().all(|t| t.fract() == 0.0), "{:?}", steps.ticks());
    }

    #[test]
    fn escaping() {
        assert_eq!(esc(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }
}
