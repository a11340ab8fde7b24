//! The soak view: each of AWS's figures as a braille chart over the soak so far, its threshold
//! and Heroku's level drawn across it, Heroku's own baseline as a sparkline beside it, and the
//! deployments, rollbacks, restarts and the cutover marked under the time axis. Pure drawing
//! from the journal (crate::status::soak_picture); a terminal too short for charts gets one
//! line per figure.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Block, BorderType, Borders, Chart, Clear, Dataset, GraphType, Paragraph, Sparkline, Wrap,
};
use ratatui::Frame;

use crate::soak::{number_text, Figure, MarkKind, Picture};

use super::model::Model;
use super::theme;

const AWS: Color = Color::Cyan;
const LIMIT: Color = Color::Red;
const HEROKU: Color = Color::Magenta;

fn mark_style(kind: MarkKind) -> Style {
    match kind {
        MarkKind::Cutover => Style::new().fg(Color::Green).add_modifier(Modifier::BOLD),
        MarkKind::Deploy => Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        MarkKind::Rollback => Style::new()
            .fg(Color::LightRed)
            .add_modifier(Modifier::BOLD),
        MarkKind::Task => Style::new().fg(Color::DarkGray),
    }
}

/// "2026-12-04 22:05" (UTC).
pub fn minute_text(unix: u64) -> String {
    let text = humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix),
    )
    .to_string();
    text.get(..16).unwrap_or(&text).replace('T', " ")
}

pub fn draw(frame: &mut Frame<'_>, area: Rect, model: &Model) {
    let rect = area;
    frame.render_widget(Clear, rect);
    let picture = crate::status::soak_picture(&model.runbook, &model.journal);
    let border = match &picture {
        Ok(p) if p.verdict.as_deref() == Some("no-go") => theme::danger(),
        _ => Style::new().fg(Color::Cyan),
    };
    let block = Block::default()
        .borders(Borders::ALL)
        .border_type(BorderType::Rounded)
        .border_style(border)
        .title(" Soak: AWS against Heroku's baseline ")
        .title_bottom(" any key: close ");
    let inner = block.inner(rect);
    frame.render_widget(block, rect);
    let picture = match picture {
        Ok(p) => p,
        Err(why) => {
            frame.render_widget(
                Paragraph::new(vec![
                    Line::from(why),
                    Line::from(Span::styled(
                        "The view fills once the soak gate has read CloudWatch: run it (it is safe to run again).",
                        theme::dim(),
                    )),
                ])
                .wrap(Wrap { trim: false }),
                inner,
            );
            return;
        }
    };
    let mut head = header(&picture);
    let breaches = picture.breaches.len().min(3);
    head.extend(
        picture
            .breaches
            .iter()
            .take(breaches)
            .map(|b| Line::from(Span::styled(format!("no-go: {b}"), theme::danger()))),
    );
    let [top, grid] = Layout::vertical([
        Constraint::Length(u16::try_from(head.len()).unwrap_or(3)),
        Constraint::Min(1),
    ])
    .areas(inner);
    frame.render_widget(Paragraph::new(head), top);
    let figures = &picture.figures;
    let rows = figures.len().div_ceil(2).max(1);
    let cell_height = usize::from(grid.height) / rows;
    if cell_height < 5 || grid.width < 60 {
        frame.render_widget(Paragraph::new(compact(&picture, grid.width)), grid);
        return;
    }
    let row_areas = Layout::vertical(vec![Constraint::Fill(1); rows]).split(grid);
    for (i, figure) in figures.iter().enumerate() {
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                .areas(row_areas[i / 2]);
        draw_figure(
            frame,
            if i % 2 == 0 { left } else { right },
            &picture,
            figure,
        );
    }
}

fn header(p: &Picture) -> Vec<Line<'static>> {
    let verdict = match p.verdict.as_deref() {
        Some("go") => Span::styled(
            "go",
            Style::new().fg(Color::Green).add_modifier(Modifier::BOLD),
        ),
        Some("no-go") => Span::styled("NO-GO", theme::danger()),
        Some(other) => Span::raw(other.to_string()),
        None => Span::raw("not judged"),
    };
    let baseline = p
        .baseline
        .map_or("no Heroku baseline recorded".to_string(), |(a, b)| {
            format!(
                "Heroku's baseline {} → {} UTC",
                minute_text(a),
                minute_text(b)
            )
        });
    vec![
        Line::from(vec![
            Span::styled("AWS ", theme::title()),
            Span::raw(format!(
                "{} → {} UTC ({} min) · the gate: ",
                minute_text(p.from),
                minute_text(p.to),
                (p.to.saturating_sub(p.from)) / 60 + 1
            )),
            verdict,
            Span::raw(format!(" · {baseline}")),
        ]),
        Line::from(vec![
            Span::styled("⣀⣀ AWS ", Style::new().fg(AWS)),
            Span::styled("── limit ", Style::new().fg(LIMIT)),
            Span::styled("── Heroku ", Style::new().fg(HEROKU)),
            Span::raw("· under the axis: "),
            Span::styled("C", mark_style(MarkKind::Cutover)),
            Span::raw(" cutover "),
            Span::styled("D", mark_style(MarkKind::Deploy)),
            Span::raw(" deployment "),
            Span::styled("R", mark_style(MarkKind::Rollback)),
            Span::raw(" rollback "),
            Span::styled("T", mark_style(MarkKind::Task)),
            Span::raw(" task started"),
        ]),
    ]
}

/// The cell's title: the figure, its latest value, what the gate judged against its limit,
/// and Heroku's.
fn title(f: &Figure) -> Line<'static> {
    let mut spans = vec![Span::styled(format!(" {} ", f.title), theme::title())];
    let unit = if f.unit == "%" {
        "%".to_string()
    } else {
        format!(" {}", f.unit)
    };
    spans.push(Span::raw(match f.last() {
        Some(v) => format!("{}{unit} ", number_text(v)),
        None => "no data ".to_string(),
    }));
    if let Some(v) = f.judged {
        spans.push(Span::styled(
            format!("judged {}{unit} ", number_text(v)),
            if f.broken() {
                theme::danger()
            } else {
                Style::new()
            },
        ));
    }
    if let Some(l) = f.limit {
        spans.push(Span::styled(
            format!("limit {} ", l.text()),
            Style::new().fg(LIMIT),
        ));
    }
    if let Some(h) = f.heroku_level {
        spans.push(Span::styled(
            format!("Heroku {} ", number_text(h)),
            Style::new().fg(HEROKU),
        ));
    }
    Line::from(spans)
}

fn draw_figure(frame: &mut Frame<'_>, area: Rect, p: &Picture, f: &Figure) {
    let broken = f.broken();
    let top = f
        .points
        .iter()
        .map(|p| p.1)
        .chain(f.limit.map(|l| l.value()))
        .chain(f.heroku_level)
        .fold(0.0_f64, f64::max);
    let top = if top <= 0.0 { 1.0 } else { top * 1.1 };
    // The time axis's ends and the chart's top, on the cell's bottom border.
    let (from, to) = (minute_text(p.from), minute_text(p.to + 60));
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(if broken {
            Style::new().fg(Color::Red)
        } else {
            theme::dim()
        })
        .title(title(f))
        .title_bottom(
            Line::from(format!(
                " {} · top {} ",
                from.get(11..).unwrap_or(&from),
                number_text(top)
            ))
            .left_aligned(),
        )
        .title_bottom(Line::from(format!(" {} ", to.get(11..).unwrap_or(&to))).right_aligned());
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let chart_area = if f.heroku.is_empty() || inner.width < 40 {
        inner
    } else {
        // Heroku's own minutes, beside: a sparkline on its own scale, before the cutover.
        let [side, chart] =
            Layout::horizontal([Constraint::Length(14), Constraint::Min(10)]).areas(inner);
        let [label, spark] =
            Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(side);
        frame.render_widget(
            Paragraph::new(Span::styled("Heroku", Style::new().fg(HEROKU))),
            label,
        );
        let values: Vec<u64> = f
            .heroku
            .iter()
            .rev()
            .take(usize::from(spark.width.saturating_sub(1)))
            .rev()
            .map(|(_, v)| (v * 100.0).round().max(0.0) as u64)
            .collect();
        frame.render_widget(
            Sparkline::default()
                .data(&values)
                .style(Style::new().fg(HEROKU)),
            Rect {
                width: spark.width.saturating_sub(1),
                ..spark
            },
        );
        chart
    };
    if f.points.is_empty() {
        frame.render_widget(
            Paragraph::new(Span::styled(
                "no data point in the window (CloudWatch has none)",
                theme::dim(),
            )),
            chart_area,
        );
        return;
    }
    let [plot, axis] =
        Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(chart_area);
    let x0 = p.from as f64;
    let x1 = (p.to + 60) as f64;
    let aws: Vec<(f64, f64)> = f.points.iter().map(|(m, v)| (*m as f64, *v)).collect();
    let across = |y: f64| vec![(x0, y), (x1, y)];
    let limit = f.limit.map(|l| across(l.value()));
    let heroku = f.heroku_level.map(across);
    let marks: Vec<(MarkKind, Vec<(f64, f64)>)> = p
        .marks
        .iter()
        .filter(|m| m.kind != MarkKind::Task)
        .map(|m| (m.kind, vec![(m.at as f64, 0.0), (m.at as f64, top)]))
        .collect();
    let mut datasets = Vec::new();
    for (kind, line) in &marks {
        datasets.push(
            Dataset::default()
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(mark_style(*kind).remove_modifier(Modifier::BOLD))
                .data(line),
        );
    }
    if let Some(line) = &heroku {
        datasets.push(
            Dataset::default()
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::new().fg(HEROKU))
                .data(line),
        );
    }
    if let Some(line) = &limit {
        datasets.push(
            Dataset::default()
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::new().fg(LIMIT))
                .data(line),
        );
    }
    datasets.push(
        Dataset::default()
            .marker(Marker::Braille)
            .graph_type(if aws.len() == 1 {
                GraphType::Scatter
            } else {
                GraphType::Line
            })
            .style(Style::new().fg(AWS))
            .data(&aws),
    );
    frame.render_widget(
        Chart::new(datasets)
            .x_axis(Axis::default().bounds([x0, x1]))
            .y_axis(Axis::default().bounds([0.0, top])),
        plot,
    );
    frame.render_widget(Paragraph::new(axis_line(p, axis.width)), axis);
}

/// Under the chart: the marks at their minutes (a cutover, deployment or rollback over a task
/// start in the same column).
fn axis_line(p: &Picture, width: u16) -> Line<'static> {
    let width = usize::from(width);
    let mut cells: Vec<Span<'static>> = vec![Span::styled("─", theme::dim()); width];
    let mut put = |at: usize, text: &str, style: Style| {
        for (i, c) in text.chars().enumerate() {
            if let Some(cell) = cells.get_mut(at + i) {
                *cell = Span::styled(c.to_string(), style);
            }
        }
    };
    let span = (p.to + 60).saturating_sub(p.from).max(1) as f64;
    let mut marks = p.marks.clone();
    // Task starts first: a cutover, deployment or rollback in the same column wins.
    marks.sort_by_key(|m| m.kind != MarkKind::Task);
    for m in &marks {
        let x = ((m.at.saturating_sub(p.from)) as f64 / span * (width.max(1) - 1) as f64).round();
        put(x as usize, &m.kind.letter().to_string(), mark_style(m.kind));
    }
    Line::from(cells)
}

/// One line per figure, for a terminal too short for charts: its name, its latest stretch as
/// a sparkline as wide as the line leaves room for, and its figures.
fn compact(p: &Picture, width: u16) -> Vec<Line<'static>> {
    p.figures
        .iter()
        .map(|f| {
            let figures: Vec<Span<'static>> = title(f).spans.into_iter().skip(1).collect();
            let text: usize = figures.iter().map(Span::width).sum();
            let room = usize::from(width)
                .saturating_sub(20 + 1 + text)
                .clamp(8, 40);
            let values: Vec<f64> = f.points.iter().map(|p| p.1).collect();
            let tail: Vec<f64> = values.iter().rev().take(room).rev().copied().collect();
            let mut spans = vec![
                Span::styled(format!("{:<20}", f.title), theme::title()),
                Span::styled(
                    format!("{:<room$} ", crate::window::sparkline(&tail)),
                    Style::new().fg(AWS),
                ),
            ];
            spans.extend(figures);
            Line::from(spans)
        })
        .collect()
}
