//! Charts drawn on the server as inline SVG (the CSP allows no scripts, and nothing
//! is fetched): this module computes the geometry in whole SVG units, sans-IO, and
//! the template draws it (`dashboard.html`'s `chart` macro), escaping every text.
//! A chart has slots along x (days, weeks, buckets), a value axis from 0 up to a
//! round number, bars stacked or side by side in a slot, and lines through slots.

/// Width of a chart in SVG units (and CSS pixels: charts are drawn at this size).
pub const WIDTH: i64 = 720;
/// Height of a chart.
pub const HEIGHT: i64 = 200;
/// Room left of the plot for the value labels.
const LEFT: i64 = 52;
/// Room under the plot for the slot labels.
const BELOW: i64 = 22;
/// Room above the plot, so the top value label is not cut.
const ABOVE: i64 = 8;
/// Room right of the plot.
const RIGHT: i64 = 8;
/// Value axis divisions (gridlines above 0).
const DIVISIONS: u32 = 4;

/// Colours of series and courts, in order (Okabe–Ito: told apart with the common
/// colour-vision deficiencies); a ninth series reuses the first colour.
pub const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#7A6A00", "#000000",
];

/// The colour of series `index`.
pub fn colour(index: usize) -> &'static str {
    PALETTE[index % PALETTE.len()]
}

/// A bar or a bar's segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rect {
    /// Left edge.
    pub x: i64,
    /// Top edge.
    pub y: i64,
    /// Width.
    pub width: i64,
    /// Height.
    pub height: i64,
    /// Fill colour.
    pub fill: &'static str,
    /// What it shows, as the tooltip and for screen readers.
    pub title: String,
}

/// A line through consecutive slots that have a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// `x,y x,y ...`.
    pub points: String,
    /// Stroke colour.
    pub stroke: &'static str,
}

/// A label at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// Horizontal position (centre for slot labels, right end for value labels).
    pub x: i64,
    /// Baseline.
    pub y: i64,
    /// The text.
    pub text: String,
}

/// One chart's geometry.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// Whole width ([`WIDTH`]).
    pub width: i64,
    /// Whole height ([`HEIGHT`]).
    pub height: i64,
    /// Left edge of the plot (where the gridlines start).
    pub plot_left: i64,
    /// Right edge of the plot.
    pub plot_right: i64,
    /// Gridlines: their y and value label.
    pub grid: Vec<Label>,
    /// Bars.
    pub rects: Vec<Rect>,
    /// Lines.
    pub lines: Vec<Line>,
    /// Slot labels under the plot.
    pub labels: Vec<Label>,
    /// Slots along x.
    slots: usize,
    /// The value at the top of the plot.
    top_value: f64,
}

/// The smallest of 1, 2, 5 × 10ⁿ (n ≥ 0) at least `value`, so gridlines fall on round
/// numbers; 1 for nothing to show.
pub fn round_ceiling(value: f64) -> f64 {
    let mut step = 1.0;
    loop {
        for factor in [1.0, 2.0, 5.0] {
            if step * factor >= value {
                return step * factor;
            }
        }
        step *= 10.0;
    }
}

impl Chart {
    /// An empty chart of `slots` slots whose value axis reaches at least `max`.
    pub fn new(slots: usize, max: f64) -> Chart {
        let top_value = round_ceiling(max);
        let mut chart = Chart {
            width: WIDTH,
            height: HEIGHT,
            plot_left: LEFT,
            plot_right: WIDTH - RIGHT,
            grid: Vec::new(),
            rects: Vec::new(),
            lines: Vec::new(),
            labels: Vec::new(),
            slots: slots.max(1),
            top_value,
        };
        chart.grid = (0..=DIVISIONS)
            .map(|division| {
                let value = top_value * f64::from(division) / f64::from(DIVISIONS);
                Label {
                    x: LEFT - 4,
                    y: chart.y(value),
                    text: if value.fract() == 0.0 {
                        format!("{value:.0}")
                    } else {
                        format!("{value:.1}")
                    },
                }
            })
            .collect();
        chart
    }

    /// The y of `value`.
    fn y(&self, value: f64) -> i64 {
        let plot = (HEIGHT - BELOW - ABOVE) as f64;
        let share = (value / self.top_value).clamp(0.0, 1.0);
        HEIGHT - BELOW - (share * plot).round() as i64
    }

    /// Left edge and width of slot `slot` (a fifth of it left free between slots).
    fn slot(&self, slot: usize) -> (i64, i64) {
        let plot = (self.plot_right - self.plot_left) as f64;
        let each = plot / self.slots as f64;
        let x = self.plot_left as f64 + each * slot as f64 + each * 0.1;
        (x.round() as i64, (each * 0.8).round().max(1.0) as i64)
    }

    /// Bars of `values` (value, colour, title) stacked from 0 in `slot`; zero values
    /// draw nothing.
    pub fn stack(&mut self, slot: usize, values: &[(f64, &'static str, String)]) {
        let (x, width) = self.slot(slot);
        let mut base = 0.0;
        for (value, fill, title) in values {
            if *value <= 0.0 {
                continue;
            }
            let (bottom, top) = (self.y(base), self.y(base + value));
            base += value;
            self.rects.push(Rect {
                x,
                y: top,
                width,
                height: (bottom - top).max(1),
                fill,
                title: title.clone(),
            });
        }
    }

    /// Bars of `values` side by side in `slot`.
    pub fn group(&mut self, slot: usize, values: &[(f64, &'static str, String)]) {
        let (x, width) = self.slot(slot);
        let each = (width / values.len().max(1) as i64).max(1);
        for (index, (value, fill, title)) in values.iter().enumerate() {
            if *value <= 0.0 {
                continue;
            }
            let top = self.y(*value);
            self.rects.push(Rect {
                x: x + each * index as i64,
                y: top,
                width: each,
                height: (self.y(0.0) - top).max(1),
                fill,
                title: title.clone(),
            });
        }
    }

    /// A line through the centres of the slots, one value per slot; a slot without a
    /// value breaks it (each run of two or more values is a line of its own).
    pub fn line(&mut self, values: &[Option<f64>], stroke: &'static str) {
        let mut run: Vec<String> = Vec::new();
        for (slot, value) in values.iter().chain([&None]).enumerate() {
            match value {
                Some(value) => {
                    let (x, width) = self.slot(slot);
                    run.push(format!("{},{}", x + width / 2, self.y(*value)));
                }
                None => {
                    if run.len() > 1 {
                        self.lines.push(Line {
                            points: run.join(" "),
                            stroke,
                        });
                    }
                    run.clear();
                }
            }
        }
    }

    /// Labels `slot` under the plot.
    pub fn label(&mut self, slot: usize, text: String) {
        let (x, width) = self.slot(slot);
        self.labels.push(Label {
            x: x + width / 2,
            y: HEIGHT - 6,
            text,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_end_on_round_numbers() {
        assert_eq!(round_ceiling(0.0), 1.0);
        assert_eq!(round_ceiling(1.0), 1.0);
        assert_eq!(round_ceiling(3.0), 5.0);
        assert_eq!(round_ceiling(6_399.0), 10_000.0);
        assert_eq!(round_ceiling(100.0), 100.0);
        assert_eq!(round_ceiling(101.0), 200.0);
        let chart = Chart::new(3, 80.0);
        let labels: Vec<&str> = chart.grid.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(labels, ["0", "25", "50", "75", "100"]);
        assert_eq!(chart.grid[0].y, HEIGHT - BELOW);
        assert_eq!(chart.grid[4].y, ABOVE);
    }

    #[test]
    fn stacked_segments_sit_on_each_other() {
        let mut chart = Chart::new(2, 10.0);
        chart.stack(
            1,
            &[
                (4.0, colour(0), "a".into()),
                (0.0, colour(1), "none".into()),
                (6.0, colour(2), "b".into()),
            ],
        );
        assert_eq!(chart.rects.len(), 2);
        let (a, b) = (&chart.rects[0], &chart.rects[1]);
        assert_eq!(a.y + a.height, HEIGHT - BELOW);
        assert_eq!(b.y + b.height, a.y);
        assert_eq!(b.y, ABOVE);
        assert_eq!(a.x, b.x);
        assert!(a.x > (LEFT + WIDTH - RIGHT) / 2, "slot 1 of 2 is on the right");
    }

    #[test]
    fn grouped_bars_stand_side_by_side_and_lines_break_at_gaps() {
        let mut chart = Chart::new(4, 2.0);
        chart.group(0, &[(1.0, colour(0), "x".into()), (2.0, colour(1), "y".into())]);
        assert_eq!(chart.rects[0].x + chart.rects[0].width, chart.rects[1].x);
        assert!(chart.rects[1].height > chart.rects[0].height);
        chart.line(&[Some(1.0), Some(2.0), None, Some(1.0)], colour(0));
        assert_eq!(chart.lines.len(), 1, "a lone point draws no line");
        assert_eq!(chart.lines[0].points.split(' ').count(), 2);
    }
}
