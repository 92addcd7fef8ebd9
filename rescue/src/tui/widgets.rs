//! Small drawing helpers shared by the screens: selectable lists, key lines, dialogs. Selection is shown
//! with reverse video and a `>` marker, so everything reads without colour.

use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, List, ListItem, ListState, Paragraph, Wrap};
use ratatui::Frame;

pub fn selected_style() -> Style {
    Style::default().add_modifier(Modifier::REVERSED)
}

pub fn dim() -> Style {
    Style::default().add_modifier(Modifier::DIM)
}

pub fn bold() -> Style {
    Style::default().add_modifier(Modifier::BOLD)
}

/// A list of lines with one selected row, scrolled to keep it visible. Disabled rows are dimmed.
pub fn select_list(
    f: &mut Frame,
    area: Rect,
    title: &str,
    items: Vec<(String, bool)>,
    selected: usize,
) {
    let items: Vec<ListItem> = items
        .into_iter()
        .map(|(text, enabled)| {
            let item = ListItem::new(text);
            if enabled {
                item
            } else {
                item.style(dim())
            }
        })
        .collect();
    let empty = items.is_empty();
    let list = List::new(items)
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title(title.to_string()),
        )
        .highlight_style(selected_style())
        .highlight_symbol("> ");
    let mut state = ListState::default();
    if !empty {
        state.select(Some(selected));
    }
    f.render_stateful_widget(list, area, &mut state);
}

/// Text in a bordered box, wrapped.
pub fn text_box(f: &mut Frame, area: Rect, title: &str, lines: Vec<Line<'static>>) {
    let p = Paragraph::new(lines)
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title(title.to_string()),
        )
        .wrap(Wrap { trim: false });
    f.render_widget(p, area);
}

/// `key action` pairs as one line, keys in bold.
pub fn key_line(keys: &[(&str, &str)]) -> Line<'static> {
    let mut spans = Vec::new();
    for (i, (k, what)) in keys.iter().enumerate() {
        if i > 0 {
            spans.push(Span::raw("  "));
        }
        spans.push(Span::styled(k.to_string(), bold()));
        spans.push(Span::raw(format!(" {what}")));
    }
    Line::from(spans)
}

/// A rectangle of `w`×`h` (clipped) in the middle of `area`.
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

/// A dialog box over whatever is drawn.
pub fn dialog(f: &mut Frame, area: Rect, title: &str, lines: Vec<Line<'static>>, width: u16) {
    let h = (lines.len() as u16 + 2).min(area.height);
    let r = centered(area, width, h);
    f.render_widget(Clear, r);
    text_box(f, r, title, lines);
}

/// Split `area` into rows of the given heights (`0` = the rest).
pub fn rows(area: Rect, heights: &[u16]) -> Vec<Rect> {
    let constraints: Vec<Constraint> = heights
        .iter()
        .map(|&h| {
            if h == 0 {
                Constraint::Min(0)
            } else {
                Constraint::Length(h)
            }
        })
        .collect();
    Layout::default()
        .direction(Direction::Vertical)
        .constraints(constraints)
        .split(area)
        .to_vec()
}

/// Truncate to `w` characters, marking the cut with `~`.
pub fn fit(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        s.to_string()
    } else if w == 0 {
        String::new()
    } else {
        let mut t: String = s.chars().take(w - 1).collect();
        t.push('~');
        t
    }
}
