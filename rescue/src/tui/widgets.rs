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

/// A labelled input field; the active one is marked with `>` and shown in reverse video.
pub fn field_line(label: &str, value: &str, active: bool) -> Line<'static> {
    let style = if active {
        Style::default().add_modifier(Modifier::REVERSED)
    } else {
        Style::default()
    };
    Line::from(vec![
        Span::styled(
            format!("{}{label}", if active { "> " } else { "  " }),
            bold(),
        ),
        Span::styled(value.to_string(), style),
    ])
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
    // Rows out of sight are announced on the border: the list scrolls only as far as the selection.
    let visible = area.height.saturating_sub(2) as usize;
    let first = (selected + 1).saturating_sub(visible);
    let below = items.len().saturating_sub(first + visible);
    let mut more = Vec::new();
    if first > 0 {
        more.push(format!("↑ {first} more"));
    }
    if below > 0 {
        more.push(format!("↓ {below} more"));
    }
    let mut block = Block::default()
        .borders(Borders::ALL)
        .title(title.to_string());
    if !more.is_empty() {
        block = block.title_bottom(Line::from(format!(" {} ", more.join("  "))).right_aligned());
    }
    let list = List::new(items)
        .block(block)
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

/// `area` split into a list above and a bordered box below that holds `text` whole (wrapped), leaving the
/// list at least `list_min` rows: the box grows with what it has to say. Returns the list's area.
pub fn with_info_box(f: &mut Frame, area: Rect, list_min: u16, title: &str, text: &str) -> Rect {
    let lines = wrap(text, area.width.saturating_sub(2) as usize);
    let room = area.height.saturating_sub(list_min).max(3);
    let h = (lines.len() as u16 + 2).clamp(3, room);
    let parts = rows(area, &[0, h]);
    let lines = lines.into_iter().map(Line::from).collect();
    text_box(f, parts[1], title, lines);
    parts[0]
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

/// `text` broken into lines of at most `width` characters, at spaces where it can (a word longer than a
/// line is cut). Nothing is lost, so a reason or advice can always be read whole.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    for para in text.split('\n') {
        // An indented line keeps its indent on every line it becomes.
        let body = para.trim_start_matches(' ');
        let indent = " ".repeat((para.len() - body.len()).min(width / 2));
        let width = width.saturating_sub(indent.len()).max(1);
        let mut lines = Vec::new();
        let mut line = String::new();
        for word in body.split(' ') {
            let mut word: Vec<char> = word.chars().collect();
            let len = line.chars().count();
            if len > 0 && len + 1 + word.len() <= width {
                line.push(' ');
            } else if len > 0 {
                lines.push(std::mem::take(&mut line));
            }
            while word.len() > width {
                let rest = word.split_off(width);
                lines.push(word.into_iter().collect());
                word = rest;
            }
            line.extend(word);
        }
        lines.push(line);
        out.extend(lines.into_iter().map(|l| format!("{indent}{l}")));
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_keeps_every_character_within_the_width() {
        let text =
            "refused: /dev/sda1 cannot hold the image: it is an EFI system partition (too small \
                    and shared with the firmware); use another drive, or restart the rescue system";
        for width in [1, 7, 20, 78] {
            let lines = wrap(text, width);
            assert!(
                lines.iter().all(|l| l.chars().count() <= width),
                "{lines:?}"
            );
            let joined: String = lines.concat().split_whitespace().collect();
            let want: String = text.split_whitespace().collect();
            assert_eq!(joined, want, "width {width}");
        }
        assert_eq!(wrap("a b", 3), vec!["a b"]);
        assert_eq!(wrap("abcdef", 4), vec!["abcd", "ef"]);
        assert_eq!(wrap("", 10), vec![""]);
        assert_eq!(wrap("  ab cd", 5), vec!["  ab", "  cd"]);
    }
}
