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
/// Value axis divisions (gridlines above 0) to choose from, the first that puts every
/// gridline on a whole number: 4 for 100, 5 for 10, 1 for 1.
const DIVISIONS: [u32; 4] = [4, 5, 2, 1];

/// Colours of series and courts, in order (Okabe–Ito: told apart with the common
/// colour-vision deficiencies); a ninth series reuses the first colour.
pub const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#7A6A00", "#000000",
];

/// The colour of series `index`.
pub fn colour(index: usize) -> &'static str {
    PALETTE[index % PALETTE.len()]
}

/// The bars of one series (a court, a figure): one path of rectangles, so a chart
/// of 90 days and 5 courts is 5 elements, not 450.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bars {
    /// `M x y h w v h h -w z` for each bar.
    pub path: String,
    /// Fill colour.
    pub fill: &'static str,
}

/// An invisible column over a slot carrying its tooltip (`<title>`): what the slot
/// shows, in words, for a pointer; screen readers get the table under the chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// `M x y h w v h h -w z`: the slot's whole height.
    pub path: String,
    /// The tooltip.
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
    /// Bars, one path per series that has any.
    pub bars: Vec<Bars>,
    /// Tooltip columns.
    pub columns: Vec<Column>,
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
            bars: Vec::new(),
            columns: Vec::new(),
            lines: Vec::new(),
            labels: Vec::new(),
            slots: slots.max(1),
            top_value,
        };
        let divisions = DIVISIONS
            .into_iter()
            .find(|divisions| (top_value / f64::from(*divisions)).fract() == 0.0)
            .unwrap_or(1);
        chart.grid = (0..=divisions)
            .map(|division| {
                let value = top_value * f64::from(division) / f64::from(divisions);
                Label {
                    x: LEFT - 4,
                    y: chart.y(value),
                    text: format!("{value}"),
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

    /// Appends a bar of series `series` from `from` up to `to` at `x`, `width` wide.
    fn bar(&mut self, series: usize, x: i64, width: i64, from: f64, to: f64) {
        let (bottom, top) = (self.y(from), self.y(to));
        let height = (bottom - top).max(1);
        let fill = colour(series);
        let index = match self.bars.iter().position(|bars| bars.fill == fill) {
            Some(index) => index,
            None => {
                self.bars.push(Bars {
                    path: String::new(),
                    fill,
                });
                self.bars.len() - 1
            }
        };
        let path = &mut self.bars[index].path;
        if !path.is_empty() {
            path.push(' ');
        }
        path.push_str(&format!("M{x} {top}h{width}v{height}h-{width}z"));
    }

    /// Bars of `values` (series, value) stacked from 0 in `slot`; zero values draw
    /// nothing.
    pub fn stack(&mut self, slot: usize, values: &[(usize, f64)]) {
        let (x, width) = self.slot(slot);
        let mut base = 0.0;
        for &(series, value) in values {
            if value > 0.0 {
                self.bar(series, x, width, base, base + value);
                base += value;
            }
        }
    }

    /// Bars of `values` (series, value) side by side in `slot`.
    pub fn group(&mut self, slot: usize, values: &[(usize, f64)]) {
        let (x, width) = self.slot(slot);
        let each = (width / values.len().max(1) as i64).max(1);
        for (place, &(series, value)) in values.iter().enumerate() {
            if value > 0.0 {
                self.bar(series, x + each * place as i64, each, 0.0, value);
            }
        }
    }

    /// The tooltip of `slot`.
    pub fn title(&mut self, slot: usize, title: String) {
        let plot = (self.plot_right - self.plot_left) as f64 / self.slots as f64;
        let x = (self.plot_left as f64 + plot * slot as f64).round() as i64;
        let width = plot.round().max(1.0) as i64;
        let height = HEIGHT - BELOW - ABOVE;
        self.columns.push(Column {
            path: format!("M{x} {ABOVE}h{width}v{height}h-{width}z"),
            title,
        });
    }

    /// A line through the centres of the slots, one value per slot; a slot without a
    /// value breaks it (each run of two or more values is a line of its own).
    pub fn line(&mut self, values: &[Option<f64>], series: usize) {
        let stroke = colour(series);
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
        let labels = |max| {
            Chart::new(1, max)
                .grid
                .into_iter()
                .map(|l| l.text)
                .collect::<Vec<_>>()
        };
        assert_eq!(labels(0.0), ["0", "1"]);
        assert_eq!(labels(7.0), ["0", "2", "4", "6", "8", "10"]);
        assert_eq!(labels(1_500.0), ["0", "500", "1000", "1500", "2000"]);
    }

    #[test]
    fn stacked_segments_sit_on_each_other() {
        let mut chart = Chart::new(2, 10.0);
        chart.stack(1, &[(0, 4.0), (1, 0.0), (2, 6.0)]);
        chart.title(1, "x".into());
        let paths: Vec<(&str, &str)> = chart
            .bars
            .iter()
            .map(|bars| (bars.fill, bars.path.as_str()))
            .collect();
        // The plot is 170 high above y 178 and 660 wide from x 52, a slot 330 with a
        // tenth free each side: 4 of 10 is 68 high, 6 more reach the top (8).
        assert_eq!(
            paths,
            [
                (colour(0), "M415 110h264v68h-264z"),
                (colour(2), "M415 8h264v102h-264z")
            ]
        );
        assert_eq!(chart.columns[0].path, "M382 8h330v170h-330z");
    }

    #[test]
    fn grouped_bars_stand_side_by_side_and_lines_break_at_gaps() {
        let mut chart = Chart::new(4, 2.0);
        chart.group(0, &[(0, 1.0), (1, 2.0)]);
        chart.group(1, &[(0, 1.0), (1, 0.0)]);
        assert_eq!(chart.bars[0].path, "M69 93h66v85h-66z M234 93h66v85h-66z");
        assert_eq!(chart.bars[1].path, "M135 8h66v170h-66z");
        chart.line(&[Some(1.0), Some(2.0), None, Some(1.0)], 0);
        assert_eq!(chart.lines.len(), 1, "a lone point draws no line");
        assert_eq!(chart.lines[0].points.split(' ').count(), 2);
    }
}
