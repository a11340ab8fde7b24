//! `cutover report --charts DIR`: the soak's pictures as SVG files, one per figure (plotters'
//! SVG backend): Heroku's baseline on the left on its own minutes, AWS's figure over the soak
//! on the right with its threshold, Heroku's level and the marks (C cutover, D deployment,
//! R rollback, T task started) on the time axis. The same picture the UI's soak view draws.

use std::path::{Path, PathBuf};

use cutover::soak::{number_text, Figure, MarkKind, Picture};
use plotters::prelude::*;

const AWS: RGBColor = RGBColor(0, 114, 178);
const LIMIT: RGBColor = RGBColor(213, 94, 0);
const HEROKU: RGBColor = RGBColor(121, 76, 163);
const MARK: RGBColor = RGBColor(90, 90, 90);

fn hhmm(unix: u64) -> String {
    format!("{:02}:{:02}", unix / 3600 % 24, unix / 60 % 60)
}

/// Writes `soak-<figure>.svg` for every figure into `dir`; the paths written.
pub fn write(picture: &Picture, dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut written = Vec::new();
    for figure in &picture.figures {
        // The key comes from the journal: a file name of letters, digits and `_` only.
        if figure.key.is_empty()
            || !figure
                .key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(format!(
                "a figure named {:?} is not a file name",
                figure.key
            ));
        }
        let path = dir.join(format!("soak-{}.svg", figure.key));
        let mut svg = String::new();
        draw(picture, figure, &mut svg).map_err(|e| format!("{}: {e}", figure.key))?;
        std::fs::write(&path, svg).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn draw(p: &Picture, f: &Figure, svg: &mut String) -> Result<(), Box<dyn std::error::Error>> {
    let canvas = SVGBackend::with_string(svg, (960, 320)).into_drawing_area();
    canvas.fill(&WHITE)?;
    let unit = if f.unit == "%" {
        "%".to_string()
    } else {
        format!(" {}", f.unit)
    };
    let mut caption = format!(
        "{} ({}) — AWS {} → {} UTC",
        f.title,
        f.unit,
        hhmm(p.from),
        hhmm(p.to + 60)
    );
    if let Some(v) = f.judged {
        caption.push_str(&format!(
            " · judged {}{unit}{}",
            number_text(v),
            if f.broken() { " (BROKEN)" } else { "" }
        ));
    }
    if let Some(l) = f.limit {
        caption.push_str(&format!(" · limit {}{unit}", l.text()));
    }
    if let Some(h) = f.heroku_level {
        caption.push_str(&format!(" · Heroku {}{unit}", number_text(h)));
    }
    let root = canvas.titled(&caption, ("sans-serif", 16))?;
    let top = f
        .points
        .iter()
        .map(|p| p.1)
        .chain(f.heroku.iter().map(|p| p.1))
        .chain(f.limit.map(|l| l.value()))
        .chain(f.heroku_level)
        .fold(0.0_f64, f64::max);
    let top = if top <= 0.0 { 1.0 } else { top * 1.1 };
    let (left, right) = if f.heroku.is_empty() {
        (None, root.clone())
    } else {
        let (l, r) = root.split_horizontally(240);
        (Some(l), r)
    };
    if let (Some(area), Some(first), Some(last)) = (left, f.heroku.first(), f.heroku.last()) {
        let (x0, x1) = (first.0 as f64, (last.0 + 60) as f64);
        let mut chart = ChartBuilder::on(&area)
            .caption(
                "Heroku's baseline",
                ("sans-serif", 13).into_font().color(&HEROKU),
            )
            .margin(6)
            .x_label_area_size(24)
            .y_label_area_size(44)
            .build_cartesian_2d(x0..x1, 0.0..top)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(3)
            .y_labels(5)
            .x_label_formatter(&|x| hhmm(*x as u64))
            .y_label_formatter(&|y| number_text(*y))
            .draw()?;
        chart.draw_series(LineSeries::new(
            f.heroku.iter().map(|(m, v)| (*m as f64, *v)),
            HEROKU.stroke_width(2),
        ))?;
    }
    let (x0, x1) = (p.from as f64, (p.to + 60) as f64);
    let mut chart = ChartBuilder::on(&right)
        .caption("AWS, the soak", ("sans-serif", 13).into_font().color(&AWS))
        .margin(6)
        .x_label_area_size(24)
        .y_label_area_size(52)
        .build_cartesian_2d(x0..x1, 0.0..top)?;
    chart
        .configure_mesh()
        .light_line_style(RGBColor(235, 235, 235))
        .x_labels(8)
        .y_labels(5)
        .x_label_formatter(&|x| hhmm(*x as u64))
        .y_label_formatter(&|y| number_text(*y))
        .draw()?;
    for m in &p.marks {
        let x = m.at as f64;
        let style = match m.kind {
            MarkKind::Task => MARK.mix(0.35).stroke_width(1),
            _ => MARK.stroke_width(2),
        };
        chart.draw_series(LineSeries::new([(x, 0.0), (x, top)], style))?;
        chart.draw_series(std::iter::once(Text::new(
            m.kind.letter().to_string(),
            (x, top),
            ("sans-serif", 12).into_font().color(&MARK),
        )))?;
    }
    if let Some(h) = f.heroku_level {
        chart
            .draw_series(LineSeries::new([(x0, h), (x1, h)], HEROKU.stroke_width(1)))?
            .label(format!("Heroku {}", number_text(h)))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], HEROKU));
    }
    if let Some(l) = f.limit {
        chart
            .draw_series(LineSeries::new(
                [(x0, l.value()), (x1, l.value())],
                LIMIT.stroke_width(2),
            ))?
            .label(format!("limit {}", l.text()))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], LIMIT));
    }
    if f.points.is_empty() {
        chart.draw_series(std::iter::once(Text::new(
            "no data point in the window (CloudWatch has none)".to_string(),
            (x0 + (x1 - x0) * 0.3, top / 2.0),
            ("sans-serif", 14).into_font().color(&MARK),
        )))?;
    } else {
        chart
            .draw_series(LineSeries::new(
                f.points.iter().map(|(m, v)| (*m as f64, *v)),
                AWS.stroke_width(2),
            ))?
            .label("AWS")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], AWS));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(RGBColor(200, 200, 200))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    canvas.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover::soak::{Evidence, Figure, Limit, Mark};

    fn figure(key: &str, points: Vec<(u64, f64)>, limit: Option<Limit>) -> Figure {
        Figure {
            key: key.into(),
            title: key.replace('_', " "),
            unit: "%".into(),
            points,
            limit,
            judged: None,
            heroku: Vec::new(),
            heroku_level: Some(0.2),
        }
    }

    #[test]
    fn every_figure_is_a_chart_with_its_limit_heroku_and_the_marks() {
        let from = 1_796_004_060;
        let points: Vec<(u64, f64)> = (0..60)
            .map(|i| (from + i * 60, (i % 7) as f64 / 10.0))
            .collect();
        let buckets: Vec<cutover::soak::Bucket> = (0..30)
            .map(|i| cutover::soak::Bucket {
                minute: from - 3600 + i * 60,
                requests: 100,
                errors: u64::from(i % 10 == 0),
                p50_ms: Some(40),
                p95_ms: Some(90),
                p99_ms: Some(120),
            })
            .collect();
        let picture = Picture::new(
            Evidence {
                from,
                to: from + 59 * 60,
                figures: vec![
                    {
                        let mut f = figure("error_pct", points, Some(Limit::AtMost(0.7)));
                        f.title = "5xx rate".into();
                        f
                    },
                    figure("rds_cpu", Vec::new(), None),
                ],
            },
            Some(&buckets),
            vec![Mark {
                at: from + 1800,
                kind: MarkKind::Rollback,
                label: "circuit breaker: rolling back".into(),
            }],
            Some("go".into()),
            Vec::new(),
        );
        let dir = tempfile::tempdir().unwrap();
        let written = write(&picture, dir.path()).unwrap();
        assert_eq!(written.len(), 2);
        let svg = std::fs::read_to_string(dir.path().join("soak-error_pct.svg")).unwrap();
        for needle in [
            "5xx rate (%) — AWS 02:01 → 03:01 UTC · limit ≤ 0.70% · Heroku 0.20%",
            "Heroku&apos;s baseline",
            "\nR\n</text>",
            "limit ≤ 0.70",
            "<polyline",
        ] {
            assert!(svg.contains(needle), "{needle}: {svg}");
        }
        // Heroku's minutes on the left, AWS's, its limit, Heroku's level and the mark.
        assert!(svg.matches("<polyline").count() >= 5, "{svg}");
        let empty = std::fs::read_to_string(dir.path().join("soak-rds_cpu.svg")).unwrap();
        assert!(empty.contains("no data point in the window"), "{empty}");
    }
}
